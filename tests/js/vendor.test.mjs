// The vendored browser SDKs (static/vendor/, see bin/vendor) load as plain ES modules, with no
// bundler and no import map, and are the versions the manifest pins.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

const manifest = JSON.parse(readFileSync(new URL('../../static/vendor/manifest.json', import.meta.url)));

describe('vendored SDKs', () => {
  it('livekit-client exports Room and reports the pinned version', async () => {
    const lk = await import('../../static/vendor/livekit-client/livekit-client.esm.js');
    assert.equal(typeof lk.Room, 'function');
    assert.equal(typeof lk.RoomEvent.DataReceived, 'string');
    assert.equal(lk.version, manifest.packages['livekit-client'].version);
  });

  it('retell-client-js-sdk loads with its dependencies from the vendored copies', async () => {
    const retell = await import('../../static/vendor/retell-client-js-sdk/retell-client-js-sdk.esm.js');
    assert.equal(typeof retell.RetellWebClient, 'function');
    assert.equal(typeof new retell.RetellWebClient().startCall, 'function');
  });
});
