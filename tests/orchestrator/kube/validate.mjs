// Validates every object of every golden export (tests/orchestrator/kube/
// golden/*.yaml, written by kube_export_test.cc) against the Kubernetes
// OpenAPI schemas with the npm package kubernetes-models, and each
// CiliumNetworkPolicy against Cilium's CRD schema with
// @kubernetes-models/cilium. Run by ctest (kube_export_validate):
//   node validate.mjs GOLDEN_DIR
// The packages are those scripts/fetch-test-npm installed from this folder's
// package-lock.json into $MSB_TEST_NPM_DIR (default
// ${XDG_CACHE_HOME:-~/.cache}/msb-test/npm). Exits non-zero on the first file that fails, an
// unknown kind, or no object at all; before that it checks that the
// validator refuses a broken object (a positive control).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [goldenDir] = process.argv.slice(2);
if (!goldenDir) {
  console.error("usage: node validate.mjs GOLDEN_DIR");
  process.exit(2);
}
const cache = process.env.XDG_CACHE_HOME || path.join(process.env.HOME || "/", ".cache");
const modules = path.join(process.env.MSB_TEST_NPM_DIR || path.join(cache, "msb-test", "npm"), "node_modules");
for (const pkg of ["kubernetes-models", "@kubernetes-models/cilium", "yaml"]) {
  if (!fs.existsSync(path.join(modules, pkg, "package.json"))) {
    console.error(`validate.mjs: ${pkg} is not installed in ${modules}; run scripts/fetch-test-npm`);
    process.exit(1);
  }
}

const load = async (rel) => import(pathToFileURL(path.join(modules, rel)).href);
const { parseAllDocuments } = await load("yaml/dist/index.js");
const models = {
  "apps/v1/Deployment": (await load("kubernetes-models/apps/v1/Deployment.mjs")).Deployment,
  "apps/v1/StatefulSet": (await load("kubernetes-models/apps/v1/StatefulSet.mjs")).StatefulSet,
  "v1/Service": (await load("kubernetes-models/v1/Service.mjs")).Service,
  "networking.k8s.io/v1/NetworkPolicy": (await load("kubernetes-models/networking.k8s.io/v1/NetworkPolicy.mjs"))
    .NetworkPolicy,
  "cilium.io/v2/CiliumNetworkPolicy": (await load("@kubernetes-models/cilium/cilium.io/v2/CiliumNetworkPolicy.js"))
    .CiliumNetworkPolicy,
};

// What the API server checks of an ipBlock beyond the schema: each except is
// a strict subset of the cidr, of the same family, and an IPv6 prefix is
// not written in a dotted form (Go reads ::ffff:a.b.c.d as IPv4).
function checkIpBlocks(obj) {
  const v6 = (c) => c.includes(":");
  const len = (c) => Number(c.split("/")[1]);
  for (const dir of ["egress", "ingress"]) {
    for (const rule of obj.spec?.[dir] ?? []) {
      for (const peer of [...(rule.to ?? []), ...(rule.from ?? [])]) {
        const b = peer.ipBlock;
        if (!b) continue;
        for (const e of b.except ?? []) {
          if (v6(e) !== v6(b.cidr) || (v6(e) && e.includes(".")) || !(len(e) > len(b.cidr))) {
            throw new Error(`ipBlock ${b.cidr}: except ${e} is not a strict subset of the same family`);
          }
        }
      }
    }
  }
}

function validate(obj, where) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = models[key];
  if (!Model) throw new Error(`${where}: no validator for ${key}`);
  new Model(obj).validate();
  if (obj.kind === "NetworkPolicy") checkIpBlocks(obj);
}

// Positive controls: each validator refuses an object missing what it requires.
const broken = [
  { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: { replicas: "one" } },
  { apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "x" },
    spec: { egress: [{ toFQDNs: [{ matchNam: "a.example" }] }] } },
  { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "x" },
    spec: { podSelector: {}, egress: [{ ports: [{ port: 53, protocol: "DNS" }] }] } },
  { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "x" },
    spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: "::/0", except: ["::ffff:0.0.0.0/96"] } }] }] } },
];
for (const obj of broken) {
  let refused = false;
  try {
    validate(obj, "control");
  } catch {
    refused = true;
  }
  if (!refused) {
    console.error(`validate.mjs: the validator accepted a broken ${obj.kind}; it checks nothing`);
    process.exit(1);
  }
}

const files = fs.readdirSync(goldenDir).filter((f) => f.endsWith(".yaml")).sort();
let count = 0;
const kinds = new Set();
for (const file of files) {
  const docs = parseAllDocuments(fs.readFileSync(path.join(goldenDir, file), "utf8"));
  for (const [i, doc] of docs.entries()) {
    if (doc.errors.length) {
      console.error(`${file}: document ${i + 1}: ${doc.errors[0].message}`);
      process.exit(1);
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    const where = `${file}: document ${i + 1} (${obj.kind} ${obj.metadata?.name})`;
    try {
      validate(obj, where);
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      process.exit(1);
    }
    kinds.add(obj.kind);
    count++;
  }
}
if (count === 0) {
  console.error(`validate.mjs: no objects in ${goldenDir}`);
  process.exit(1);
}
console.log(`validated ${count} objects (${[...kinds].sort().join(", ")}) in ${files.length} files`);
