// The official Azure IoT Node clients (pinned in package.json) against `dpsctl serve`.
//
//   node run.js CONFIG.json SCENARIO...
//
// CONFIG.json is written by tests/server/test_node_clients.py: the server's port, the ID scope, the service
// key, and per scenario the registration ID and credential. Trust in the server's CA comes from
// NODE_EXTRA_CA_CERTS, as docs/serve.md tells users. Each scenario prints one JSON line:
// {"scenario", "ok", "detail"}; the exit code is 0 when every scenario passed.
'use strict';

const fs = require('fs');
const https = require('https');
const tls = require('tls');
const assert = require('assert');

const { Http: HttpBase, RestApiClient } = require('azure-iot-http-base');
const { SharedAccessSignature, anHourFromNow } = require('azure-iot-common');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: DeviceHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: DeviceMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
// The server listens on a loopback address of its own (MQTT's port 8883 is fixed in the client).
const HOST = config.host;

// The clients connect to port 443 only (`https.request({host})`); an agent that forces the port is the
// test hook the transports accept (an azure-iot-http-base Http with options.http.agent).
class PortAgent extends https.Agent {
  createConnection(options, callback) {
    return tls.connect({ ...options, port: config.port }, callback);
  }
}

function httpBase() {
  const base = new HttpBase();
  base.setOptions({ http: { agent: new PortAgent() } });
  return base;
}

function register(security, transport) {
  const client = ProvisioningDeviceClient.create(HOST, config.idScope, transport || new DeviceHttp(httpBase()), security);
  client.setProvisioningPayload({ modelId: 'dtmi:dpsctl:test;1' });
  return new Promise((resolve, reject) => {
    client.register((err, result) => (err ? reject(err) : resolve(result)));
  });
}

function serviceClient() {
  const config_ = {
    host: HOST,
    sharedAccessSignature: SharedAccessSignature.create(HOST, 'provisioningserviceowner', config.serviceKey, anHourFromNow()).toString(),
  };
  return new ProvisioningServiceClient(config_, new RestApiClient(config_, 'dpsctl-node-test/1.0', httpBase()));
}

// Callback forms only: the promise form of runBulkEnrollmentOperation in 1.11.2 never settles.
function call(fn) {
  return new Promise((resolve, reject) => fn((err, body, response) => (err ? reject(err) : resolve({ body, response }))));
}

async function refusedWith(promise, status) {
  try {
    await promise;
  } catch (err) {
    const code = err.response && err.response.statusCode;
    assert.strictEqual(code, status, `expected HTTP ${status}, got ${code}: ${err}`);
    return err;
  }
  throw new Error(`expected HTTP ${status}, but the call succeeded`);
}

function symmetricDevice(device, transport) {
  return register(new SymmetricKeySecurityClient(device.registrationId, device.key), transport);
}

function x509Device(device, transport) {
  return register(new X509Security(device.registrationId, {
    cert: fs.readFileSync(device.cert, 'utf8'),
    key: fs.readFileSync(device.key, 'utf8'),
  }), transport);
}

async function refusedDevice(attempt) {
  let failed;
  try {
    await attempt();
  } catch (err) {
    failed = err;
  }
  assert(failed, 'a device that should be refused was provisioned');
  return failed;
}

function checkAssigned(result, device) {
  assert.strictEqual(result.status, 'assigned', JSON.stringify(result));
  assert.strictEqual(result.deviceId, device.registrationId);
  assert.strictEqual(result.assignedHub, config.hub);
  return { deviceId: result.deviceId, assignedHub: result.assignedHub, substatus: result.substatus };
}

const scenarios = {
  async 'device-symmetric-individual'() {
    const device = config.devices.individual;
    return checkAssigned(await symmetricDevice(device), device);
  },

  async 'device-symmetric-group'() {
    const device = config.devices.group;
    const result = await symmetricDevice(device);
    return checkAssigned(result, device);
  },

  async 'device-x509-group'() {
    const device = config.devices.x509;
    const result = await x509Device(device);
    return checkAssigned(result, device);
  },

  async 'device-wrong-key'() {
    let failed;
    try {
      await symmetricDevice(config.devices.wrongKey);
    } catch (err) {
      failed = err;
    }
    assert(failed, 'a device with the wrong key was provisioned');
    assert.strictEqual(failed.constructor.name, 'UnauthorizedError', `${failed.constructor.name}: ${failed.message}`);
    return { error: failed.constructor.name, message: failed.message };
  },

  async 'device-untrusted-certificate'() {
    let failed;
    try {
      await x509Device(config.devices.untrusted);
    } catch (err) {
      failed = err;
    }
    assert(failed, 'a device with an untrusted certificate was provisioned');
    return { error: failed.constructor.name, code: failed.code, message: String(failed.message).slice(0, 200) };
  },

  // The same devices over MQTT (azure-iot-provisioning-device-mqtt, mqtts://HOST:8883): re-registrations.
  async 'mqtt-device-symmetric-individual'() {
    const device = config.devices.individual;
    return checkAssigned(await symmetricDevice(device, new DeviceMqtt()), device);
  },

  async 'mqtt-device-symmetric-group'() {
    const device = config.devices.group;
    return checkAssigned(await symmetricDevice(device, new DeviceMqtt()), device);
  },

  async 'mqtt-device-x509-group'() {
    const device = config.devices.x509;
    return checkAssigned(await x509Device(device, new DeviceMqtt()), device);
  },

  async 'mqtt-device-wrong-key'() {
    const failed = await refusedDevice(() => symmetricDevice(config.devices.wrongKey, new DeviceMqtt()));
    assert.strictEqual(failed.constructor.name, 'UnauthorizedError', `${failed.constructor.name}: ${failed.message}`);
    return { error: failed.constructor.name, message: failed.message };
  },

  async 'mqtt-device-untrusted-certificate'() {
    const failed = await refusedDevice(() => x509Device(config.devices.untrusted, new DeviceMqtt()));
    return { error: failed.constructor.name, code: failed.code, message: String(failed.message).slice(0, 200) };
  },

  async 'service-enrollments'() {
    const svc = serviceClient();
    const keys = { primaryKey: config.keys[0], secondaryKey: config.keys[1] };
    const created = await call((cb) => svc.createOrUpdateIndividualEnrollment({
      registrationId: 'node-enrollment',
      attestation: { type: 'symmetricKey', symmetricKey: keys },
      provisioningStatus: 'enabled',
    }, cb));
    assert.ok(created.body.etag);

    const got = await call((cb) => svc.getIndividualEnrollment('node-enrollment', cb));
    assert.strictEqual(got.body.attestation.symmetricKey.primaryKey, undefined, 'GET must not show keys');
    const mechanism = await call((cb) => svc.getIndividualEnrollmentAttestationMechanism('node-enrollment', cb));
    assert.deepStrictEqual(mechanism.body.symmetricKey, keys);

    // get, change, put back: the client sends If-Match from the object's etag.
    const changed = await call((cb) => svc.createOrUpdateIndividualEnrollment({ ...got.body, provisioningStatus: 'disabled' }, cb));
    assert.strictEqual(changed.body.provisioningStatus, 'disabled');
    assert.notStrictEqual(changed.body.etag, got.body.etag);
    await refusedWith(call((cb) => svc.createOrUpdateIndividualEnrollment({ ...got.body }, cb)), 412);
    await refusedWith(call((cb) => svc.deleteIndividualEnrollment('node-enrollment', got.body.etag, cb)), 412);
    await call((cb) => svc.deleteIndividualEnrollment('node-enrollment', changed.body.etag, cb));
    await refusedWith(call((cb) => svc.getIndividualEnrollment('node-enrollment', cb)), 404);
    return { created: created.body.registrationId, etags: [created.body.etag, changed.body.etag] };
  },

  async 'service-groups'() {
    const svc = serviceClient();
    const keys = { primaryKey: config.keys[0], secondaryKey: config.keys[1] };
    const created = await call((cb) => svc.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'node-group',
      attestation: { type: 'symmetricKey', symmetricKey: keys },
    }, cb));
    const got = await call((cb) => svc.getEnrollmentGroup('node-group', cb));
    assert.strictEqual(got.body.etag, created.body.etag);
    // The client writes this path in lower case: /enrollmentgroups/{id}/attestationmechanism.
    const mechanism = await call((cb) => svc.getEnrollmentGroupAttestationMechanism('node-group', cb));
    assert.deepStrictEqual(mechanism.body.symmetricKey, keys);
    const changed = await call((cb) => svc.createOrUpdateEnrollmentGroup({ ...got.body, initialTwin: { tags: { fleet: 'node' } } }, cb));
    assert.deepStrictEqual(changed.body.initialTwin.tags, { fleet: 'node' });
    const query = svc.createEnrollmentGroupQuery({ query: '*' }, 1);
    const ids = [];
    while (query.hasMoreResults) {
      const page = await call((cb) => query.next(cb));
      ids.push(...page.body.map((g) => g.enrollmentGroupId));
    }
    assert.ok(ids.includes('node-group'), JSON.stringify(ids));
    await call((cb) => svc.deleteEnrollmentGroup(changed.body, cb));
    await refusedWith(call((cb) => svc.getEnrollmentGroup('node-group', cb)), 404);
    return { groups: ids };
  },

  async 'service-bulk-and-query'() {
    const svc = serviceClient();
    const enrollments = [1, 2, 3, 4, 5].map((n) => ({ registrationId: `node-bulk-${n}`, attestation: { type: 'symmetricKey' } }));
    const created = await call((cb) => svc.runBulkEnrollmentOperation({ mode: 'create', enrollments }, cb));
    assert.deepStrictEqual(created.body, { isSuccessful: true, errors: [] });
    const again = await call((cb) => svc.runBulkEnrollmentOperation({ mode: 'create', enrollments: enrollments.slice(0, 1) }, cb));
    assert.strictEqual(again.body.isSuccessful, false);
    assert.strictEqual(again.body.errors[0].registrationId, 'node-bulk-1');

    const query = svc.createIndividualEnrollmentQuery({ query: '*' }, 2);
    const pages = [];
    while (query.hasMoreResults) {
      const page = await call((cb) => query.next(cb));
      pages.push(page.body.map((e) => e.registrationId));
    }
    const bulkIds = pages.flat().filter((id) => id.startsWith('node-bulk-'));
    assert.deepStrictEqual(bulkIds, enrollments.map((e) => e.registrationId));
    assert.ok(pages.every((page) => page.length <= 2), JSON.stringify(pages));

    const removed = await call((cb) => svc.runBulkEnrollmentOperation({ mode: 'delete', enrollments }, cb));
    assert.strictEqual(removed.body.isSuccessful, true, JSON.stringify(removed.body));
    return { pages };
  },

  async 'service-registration-states'() {
    const svc = serviceClient();
    const id = config.devices.group.registrationId;
    const state = await call((cb) => svc.getDeviceRegistrationState(id, cb));
    assert.strictEqual(state.body.status, 'assigned');
    assert.strictEqual(state.body.assignedHub, config.hub);
    const query = svc.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, config.groupId, 10);
    const page = await call((cb) => query.next(cb));
    assert.deepStrictEqual(page.body.map((r) => r.registrationId), [id]);
    assert.strictEqual(query.hasMoreResults, false);
    await call((cb) => svc.deleteDeviceRegistrationState(id, state.body.etag, cb));
    await refusedWith(call((cb) => svc.getDeviceRegistrationState(id, cb)), 404);
    return { registrationId: id, status: state.body.status };
  },
};

async function main() {
  let failures = 0;
  for (const name of process.argv.slice(3)) {
    const scenario = scenarios[name];
    let line;
    try {
      if (!scenario) throw new Error(`unknown scenario ${name}`);
      line = { scenario: name, ok: true, detail: await scenario() };
    } catch (err) {
      failures += 1;
      line = { scenario: name, ok: false, detail: `${err.constructor.name}: ${err.message}` };
    }
    process.stdout.write(JSON.stringify(line) + '\n');
  }
  process.exitCode = failures ? 1 : 0;
}

main();
