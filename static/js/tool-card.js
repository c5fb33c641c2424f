// Tool calls as readable cards: "Check availability", then its arguments and result as
// "Party size: 2" lines. Values that are not a flat object stay pretty-printed JSON; every
// line wraps, so a card never overflows a phone's width (static/css/demo.css).

/** "check_availability" -> "Check availability". */
export function humanize(name) {
  const words = String(name ?? '').replace(/[_-]+/g, ' ').replace(/([a-z])([A-Z])/g, '$1 $2').trim();
  return words ? words.charAt(0).toUpperCase() + words.slice(1).toLowerCase() : 'Tool';
}

function parsed(value) {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

const isScalar = (x) => x === null || typeof x !== 'object';
const scalarText = (x) => (x === null ? '—' : String(x));

/** [label, text] lines for a flat object (scalar values, or lists of them: "12:00, 12:30"), or null
 * when it is anything else. */
export function fieldLines(value) {
  const v = parsed(value);
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const entries = Object.entries(v);
  const flat = (x) => isScalar(x) || (Array.isArray(x) && x.every(isScalar));
  if (!entries.every(([, x]) => flat(x))) return null;
  return entries.map(([k, x]) => [humanize(k), Array.isArray(x) ? x.map(scalarText).join(', ') : scalarText(x)]);
}

/** The card's children: title, then arguments and result, built with textContent only. */
export function toolCardNodes(doc, call, prettyJson) {
  const make = (tag, cls, text) => {
    const node = doc.createElement(tag);
    node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const section = (label, value) => {
    const lines = fieldLines(value);
    if (lines && !lines.length) return [];
    const body = lines ? make('dl', 'tool-fields') : make('pre', 'tool-json', prettyJson(value));
    for (const [k, v] of lines || []) body.append(make('dt', '', k), make('dd', '', v));
    return [make('div', 'tool-label', label), body];
  };
  const pending = call.result === null || call.result === undefined;
  return [
    make('div', 'tool-name', humanize(call.name)),
    make('div', 'tool-kind', `Tool call · ${call.name}`),
    ...section('With', call.arguments ?? {}),
    ...(pending ? [make('div', 'tool-label', 'Result: pending…')] : section('Result', call.result)),
  ];
}
