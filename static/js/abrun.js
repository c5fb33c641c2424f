// Comparison progress (templates/sessions/abrun_detail.html): poll the run's status once a
// second while it runs, move the bar, and reload the page once it has finished to show the report.
(function () {
  "use strict";
  const box = document.getElementById("abrun-progress");
  if (!box || box.dataset.finished === "1") return;
  const bar = box.querySelector("progress");
  const state = box.querySelector("[data-state]");
  const steps = box.querySelector("[data-steps]");
  const url = box.dataset.statusUrl;
  const MAX_POLLS = 4 * 3600; // a run is bounded; so is the page's patience
  let polls = 0;

  async function poll() {
    polls += 1;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const s = await response.json();
        bar.value = s.percent;
        bar.textContent = s.percent + " %";
        state.textContent = s.status;
        state.className = "status status-" + s.status;
        steps.textContent = s.done + " of " + s.total + " replies";
        if (s.finished) {
          window.location.reload();
          return;
        }
      }
    } catch (err) {
      // a missed poll is retried on the next tick
    }
    if (polls < MAX_POLLS) window.setTimeout(poll, 1000);
  }
  window.setTimeout(poll, 1000);
})();
