// @grpc/grpc-js against a node, with static stubs loaded by @grpc/proto-loader from
// proto/ (no reflection): `node grpc_js_client.js HOST:PORT PROTO_DIR`.
// Prints one JSON object: Health/Check of "", a Put and a Get, and the ErrorInfo
// decoded from the grpc-status-details-bin trailer of a Put with an oversized key.
"use strict";

const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [endpoint, protoDir] = process.argv.slice(2);
const options = { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true };
const definitions = loader.loadSync(
  ["a3redis/v1/kv.proto", "a3redis/v1/health.proto", "a3redis/v1/error_details.proto"],
  options,
);
const loaded = grpc.loadPackageDefinition(definitions);
const insecure = grpc.credentials.createInsecure();
const health = new loaded.grpc.health.v1.Health(endpoint, insecure);
const kv = new loaded.a3redis.v1.KeyValue(endpoint, insecure);
// proto-loader parses with protobufjs (installed with it): the details trailer is decoded
// with the same parser, from a3redis's copy of the google.rpc messages.
const protobuf = require("protobufjs");
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) => require("path").join(protoDir, target);
rpc.loadSync("a3redis/v1/error_details.proto", { keepCase: true });
const Status = rpc.lookupType("a3redis.rpc.Status");
const ErrorInfo = rpc.lookupType("a3redis.rpc.ErrorInfo");

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve) => {
    client[method](request, { deadline }, (error, reply) => resolve({ error, reply }));
  });
}

function errorInfo(error) {
  const [trailer] = error.metadata.get("grpc-status-details-bin");
  if (!trailer) return null;
  const status = Status.decode(trailer);
  const packed = status.details.find((any) => any.type_url === "type.googleapis.com/google.rpc.ErrorInfo");
  return packed ? ErrorInfo.toObject(ErrorInfo.decode(packed.value)) : null;
}

async function main() {
  const out = {};
  const checked = await call(health, "Check", { service: "" });
  out.check = checked.error ? checked.error.code : checked.reply.status;
  const put = await call(kv, "Put", { key: Buffer.from("js"), value: Buffer.from("from grpc-js") });
  out.put = put.error ? put.error.details : put.reply.version.node_id;
  const got = await call(kv, "Get", { key: Buffer.from("js") });
  out.get = got.error ? got.error.details : got.reply.value.toString();
  const refused = await call(kv, "Put", { key: Buffer.alloc(100, "k"), value: Buffer.from("v") });
  out.refused_code = refused.error ? grpc.status[refused.error.code] : "OK";
  out.error_info = refused.error ? errorInfo(refused.error) : null;
  health.close();
  kv.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
