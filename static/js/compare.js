// The provider comparison plot (templates/sessions/compare.html): each provider's reply latencies as
// a cumulative distribution, with the human turn gap (~200 ms) and the 800 ms line. Chart.js is
// vendored (static/vendor/chart.js) and loaded by its own <script> tag; the data comes in a
// json_script element (CSP: no inline script).

const COLORS = ['#1d3557', '#e07a1f', '#2a9d8f', '#9b2226', '#6a4c93', '#588157', '#bc6c25'];

/** [{x: ms, y: share of replies at or under it}] of sorted latencies. */
export function cdf(sorted) {
  const n = sorted.length;
  return sorted.map((x, i) => ({ x, y: (i + 1) / n }));
}

/** A vertical marker line as a dataset. */
function marker(label, x, color) {
  return {
    label,
    data: [{ x, y: 0 }, { x, y: 1 }],
    borderColor: color,
    borderDash: [6, 4],
    borderWidth: 1.5,
    pointRadius: 0,
    showLine: true,
  };
}

export function datasets(plot) {
  const lines = plot.providers.map((p, i) => ({
    label: p.label,
    data: cdf(p.latencies),
    borderColor: COLORS[i % COLORS.length],
    backgroundColor: COLORS[i % COLORS.length],
    pointRadius: 2,
    showLine: true,
    stepped: 'after',
  }));
  return [
    ...lines,
    marker(`human turn gap (~${plot.human_gap_ms} ms)`, plot.human_gap_ms, '#555'),
    marker(`${plot.slow_ms} ms`, plot.slow_ms, '#b00020'),
  ];
}

function draw() {
  const canvas = document.getElementById('compare-chart');
  const source = document.getElementById('compare-data');
  if (!canvas || !source || typeof Chart === 'undefined') return;
  const plot = JSON.parse(source.textContent);
  const chart = new Chart(canvas, {
    type: 'scatter',
    data: { datasets: datasets(plot) },
    options: {
      animation: false, // drawn at once: nothing to wait for, also in tests
      maintainAspectRatio: false,
      scales: {
        x: { type: 'linear', min: 0, title: { display: true, text: 'ms after the end of speech' } },
        y: { min: 0, max: 1, title: { display: true, text: 'share of replies' } },
      },
      plugins: { legend: { position: 'bottom' } },
    },
  });
  canvas.dataset.drawn = String(chart.data.datasets.length);
}

if (typeof document !== 'undefined') draw();
