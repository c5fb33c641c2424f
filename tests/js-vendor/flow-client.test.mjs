// The vendor's own Flow client (@speechmatics/flow-client, pinned in package.json) against our
// Flow sandbox: code we did not write checks that the sandbox speaks Flow as Speechmatics' client
// expects. Run by tests/vendors/test_flow.py, which starts the sandbox on a loopback port and passes
// FLOW_SANDBOX_URL (http://127.0.0.1:N) and FLOW_SANDBOX_KEY.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { FlowClient } = require('@speechmatics/flow-client');

const URL_ = process.env.FLOW_SANDBOX_URL;
const KEY = process.env.FLOW_SANDBOX_KEY;
const FRAME = new Int16Array(320); // 20 ms of silence at 16 kHz

function until(client, predicate, ms = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out waiting for the sandbox')), ms);
    const check = () => {
      const found = predicate();
      if (found) {
        clearTimeout(timer);
        client.removeEventListener('message', check);
        client.removeEventListener('agentAudio', check);
        resolve(found);
      }
    };
    client.addEventListener('message', check);
    client.addEventListener('agentAudio', check);
    check();
  });
}

test('the vendor client starts a conversation, hears the greeting, gets every frame acknowledged', async () => {
  assert.ok(URL_ && KEY, 'FLOW_SANDBOX_URL and FLOW_SANDBOX_KEY must be set');
  const client = new FlowClient(URL_, { appId: 'playground-test' });
  const messages = [];
  let audio = 0;
  client.addEventListener('message', ({ data }) => messages.push(data));
  client.addEventListener('agentAudio', ({ data }) => { audio += data.length; });
  await client.startConversation(KEY, { config: { template_id: 'default', template_variables: {} } });
  assert.equal(messages[0].message, 'ConversationStarted');
  await until(client, () => messages.find((m) => m.message === 'ResponseCompleted'));
  const kinds = messages.map((m) => m.message);
  assert.ok(kinds.indexOf('ResponseStarted') < kinds.indexOf('ResponseCompleted'));
  assert.ok(audio > 16000, `the greeting's audio reached the client (${audio} samples)`);
  for (let i = 0; i < 10; i++) client.sendAudio(FRAME.buffer);
  await until(client, () => messages.find((m) => m.message === 'AudioAdded' && m.seq_no === 10));
  const acks = messages.filter((m) => m.message === 'AudioAdded').map((m) => m.seq_no);
  assert.deepEqual(acks, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  // Every AudioReceived the client sent was in range, or the sandbox would have sent an Error.
  assert.deepEqual(messages.filter((m) => m.message === 'Error' || m.message === 'Warning'), []);
  client.endConversation(); // AudioEnded{last_seq_no: 10}: the sandbox checks it matches
});

test('an unknown template is refused with an Error the client reports', async () => {
  const client = new FlowClient(URL_, { appId: 'playground-test' });
  await assert.rejects(
    client.startConversation(KEY, { config: { template_id: 'no-such-template', template_variables: {} } }),
    (error) => error.type === 'ServerError' && error.cause.type === 'config_error',
  );
});

test('a wrong key fails the upgrade', async () => {
  const client = new FlowClient(URL_, { appId: 'playground-test' });
  await assert.rejects(
    client.startConversation('not-the-key', { config: { template_id: 'default', template_variables: {} } }),
  );
});
