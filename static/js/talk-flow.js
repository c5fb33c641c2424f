// The talk page's flow around a call (talk.js runs the call itself): Start creates the
// conversation, the call's end offers the next step, and Start again begins a fresh call.
//
// The pick page creates nothing: the talk page has the chosen settings (`draft` in its config),
// and Start posts them to the conversations API with the session's CSRF token, which answers
// with the new conversation's socket path. A page opened on a conversation created beforehand
// (the API, a "Talk now" link) has its `wsPath` and uses it for the first call.

/** Stands for a conversation's id in the URL templates of the page's config. */
export const ZERO_ID = '00000000-0000-0000-0000-000000000000';

/** A URL template of the config with a conversation's id in it. */
export function conversationUrl(template, id) {
  return template.replace(ZERO_ID, id);
}

/** A sentence for a refused create (the API's JSON answer and status). */
export function describeRefusal(status, body) {
  if (status === 401) return 'You are signed out. Sign in again to talk.';
  if (status === 403) return 'The page is out of date (its security token expired). Reload it and press Start again.';
  if (status === 429) return body.error || 'Too many new conversations. Wait a minute and press Start again.';
  if (status === 400 && body.fields) {
    const problems = Object.values(body.fields).flat();
    return `These settings cannot start a conversation: ${problems.join(' ')} Choose again on the previous page.`;
  }
  return body.error || `Could not create the conversation (HTTP ${status}).`;
}

/** POST the chosen settings; resolves to the API's answer ({id, ws_path, …}), or throws with a sentence. */
export async function createConversation(cfg, fetchImpl = globalThis.fetch) {
  const response = await fetchImpl(cfg.createUrl, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRFToken': cfg.csrfToken },
    body: JSON.stringify(cfg.draft),
  });
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page): the status says enough
  }
  if (response.status !== 201) throw new Error(describeRefusal(response.status, body));
  return body;
}

/** The call ended: a turn it never finished reads as unfinished, as the conversation page says. */
export function markUnfinished(view) {
  for (const li of view.turnEls.values()) {
    if (li.dataset.final !== 'false') continue;
    li.dataset.final = 'unfinished';
    const flag = view.doc.createElement('span');
    flag.className = 'turn-unfinished';
    flag.textContent = '— unfinished';
    li.append(flag);
  }
}

/** After a call: show "New conversation" and "Open in history", and move the focus there. */
export function showNextStep(doc, cfg, conversationId) {
  const nav = doc.getElementById('talk-next');
  if (!nav) return;
  const history = doc.getElementById('talk-open-history');
  if (history && conversationId) history.href = conversationUrl(cfg.historyUrl, conversationId);
  nav.hidden = false;
  const first = nav.querySelector('a');
  if (first) first.focus();
}

/** Before another call on the same page: the last call's transcript, figures and notes go. */
export function clearCall(view) {
  const { transcript, metrics, errors, reason } = view.el;
  transcript?.replaceChildren();
  metrics?.replaceChildren();
  errors?.replaceChildren();
  if (reason) reason.textContent = '';
  view.turnEls.clear();
  view.toolEls.clear();
  view.latency?.reset(); // the chips went with the turns; the running P50 goes too
  for (const note of view.doc.querySelectorAll('.talk-note:not([id])')) note.remove(); // the call's own notes
  const nav = view.doc.getElementById('talk-next');
  if (nav) nav.hidden = true;
}
