// The conversation's recording, synced to its turns (templates/sessions/_turns.html): clicking a
// turn seeks the player to it and plays; the turn being played is highlighted. Each turn carries
// data-at-ms, its time from the start of the call, which is where it is in the recording.
(function () {
  'use strict';

  function setUp(root) {
    const audio = root.querySelector('audio[data-player]');
    const turns = Array.from(root.querySelectorAll('[data-at-ms]'));
    if (!audio || !turns.length) return;
    const times = turns.map((el) => Number(el.dataset.atMs) / 1000);
    let current = null;
    let pinned = null; // the turn clicked: it stays highlighted over others that start with it

    function highlight() {
      const now = audio.currentTime;
      let found = null;
      // The last turn that started at or before now (turns are in order, times nearly so).
      for (let i = 0; i < turns.length; i += 1) {
        if (times[i] <= now + 0.05) found = turns[i];
      }
      if (pinned && found) {
        const at = times[turns.indexOf(pinned)];
        if (times[turns.indexOf(found)] === at && at <= now + 0.05) found = pinned;
        else if (times[turns.indexOf(found)] > at) pinned = null;
      }
      if (found === current) return;
      if (current) {
        current.classList.remove('playing');
        current.removeAttribute('aria-current');
      }
      current = found;
      if (current) {
        current.classList.add('playing');
        current.setAttribute('aria-current', 'true');
      }
    }

    function seek(turn) {
      pinned = turn;
      audio.currentTime = Number(turn.dataset.atMs) / 1000;
      highlight();
      const played = audio.play();
      if (played && played.catch) played.catch(() => {}); // autoplay refused: the seek still holds
    }

    turns.forEach((turn) => {
      turn.addEventListener('click', (event) => {
        if (event.target.closest('a, input, textarea, select, form, details')) return; // review tools
        seek(turn);
      });
    });
    ['timeupdate', 'seeked', 'play'].forEach((name) => audio.addEventListener(name, highlight));
  }

  function start() {
    document.querySelectorAll('[data-review]').forEach(setUp);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
