// "Share live view" on the talk page (presenter mode, sessions/audience.py).
//
// While a call is live, the owner asks the server for a signed live-view link and its QR code
// (POST /talk/<id>/share/, an SVG data URL drawn by segno on the server), and turns presenter mode
// on over the call's own socket: talk.js sends `present` when it gets the `talk:present` event.
// "Stop sharing" turns it off; viewers then see nothing new.

import { conversationUrl } from './talk-flow.js';

const LIVE = ['listening', 'thinking', 'speaking'];

function boot() {
  const root = document.getElementById('talk');
  const button = document.getElementById('talk-share');
  if (!root || !button) return;
  const cfg = JSON.parse(document.getElementById('talk-config').textContent);
  const panel = document.getElementById('talk-share-panel');
  const $ = (id) => document.getElementById(id);

  const present = (on) => root.dispatchEvent(new CustomEvent('talk:present', { detail: { on } }));
  const hide = () => {
    panel.hidden = true;
    button.hidden = false;
  };

  // Offered only while a call runs; when it ends, the panel goes too (the viewers got `ended`).
  new MutationObserver(() => {
    const live = LIVE.includes(root.dataset.state);
    button.disabled = !live;
    if (!live && root.dataset.state !== 'connecting') hide();
  }).observe(root, { attributes: true, attributeFilter: ['data-state'] });

  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const link = await share(conversationUrl(cfg.shareUrl, root.dataset.conversation), cfg.csrfToken);
      present(true);
      $('talk-share-url').value = link.url;
      $('talk-share-qr').src = link.qr;
      $('talk-share-expiry').textContent = new Date(Date.now() + link.expires_in * 1000).toLocaleTimeString();
      panel.hidden = false;
      button.hidden = true;
      $('talk-share-url').focus();
      $('talk-share-url').select();
    } catch (err) {
      const box = $('talk-errors');
      const p = document.createElement('p');
      p.className = 'talk-error';
      p.textContent = `Could not share the live view: ${err.message}`;
      box.append(p);
    } finally {
      button.disabled = !LIVE.includes(root.dataset.state);
    }
  });

  $('talk-share-stop').addEventListener('click', () => {
    present(false);
    hide();
    button.focus();
  });
}

async function share(url, csrfToken) {
  const response = await fetch(url, { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRFToken': csrfToken } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

boot();
