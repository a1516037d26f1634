// SPDX-License-Identifier: Apache-2.0
// Validates every document of the given Kubernetes manifests against the API schema (kubernetes-models,
// the model class of the document's apiVersion and kind), then checks what ccrelay's deployment promises
// (hardened Pods, probes, drain timing). Prints one line per document; exits 1 on any failure, naming
// the file, the document's kind/name and the error.
//
//   node tests/kube/validate.mjs deploy/kubernetes/*.yaml
import { readFileSync } from "node:fs";
import { parseAllDocuments, parse as parseYaml } from "yaml";

let failures = 0;
let documents = 0;

function fail(where, msg) {
  failures++;
  console.log(`kube: validate: FAIL ${where}: ${msg}`);
}

async function modelFor(apiVersion, kind) {
  // "apps/v1" -> kubernetes-models/apps/v1/Deployment, "v1" -> kubernetes-models/v1/ConfigMap
  const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
  return mod[kind];
}

function seconds(duration, where) {
  const m = /^(\d+)(ms|s|m)$/.exec(String(duration));
  if (!m) {
    fail(where, `drain_timeout ${JSON.stringify(duration)} is not a duration this check understands`);
    return 0;
  }
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60 }[m[2]];
}

// ccrelay's promises for a Deployment: every container hardened and bounded, probes over HTTP, the
// grace period longer than preStop plus the drain of the configuration it runs.
function checkDeployment(obj, where, configMaps) {
  const spec = obj.spec.template.spec;
  const psc = spec.securityContext ?? {};
  if (psc.runAsNonRoot !== true) fail(where, "pod securityContext.runAsNonRoot must be true");
  if (psc.seccompProfile?.type !== "RuntimeDefault") fail(where, "pod seccompProfile must be RuntimeDefault");
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    const w = `${where} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false) fail(w, "allowPrivilegeEscalation must be false");
    if (sc.readOnlyRootFilesystem !== true) fail(w, "readOnlyRootFilesystem must be true");
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) fail(w, "capabilities must drop ALL");
    if (!c.resources?.requests || !c.resources?.limits?.memory) fail(w, "needs resource requests and a memory limit");
  }
  for (const c of spec.containers) {
    const w = `${where} container ${c.name}`;
    if (!c.readinessProbe?.httpGet || c.readinessProbe.httpGet.path !== "/readyz") fail(w, "readinessProbe must GET /readyz");
    if (!c.livenessProbe?.httpGet || c.livenessProbe.httpGet.path !== "/healthz") fail(w, "livenessProbe must GET /healthz");
    const cfgVol = (spec.volumes ?? []).find((v) => v.name === "config");
    const cm = cfgVol && configMaps.get(cfgVol.configMap?.name);
    const text = cm && Object.values(cm.data ?? {})[0];
    const drain = text ? seconds(parseYaml(text).drain_timeout ?? "0s", w) : 0;
    const pre = c.lifecycle?.preStop?.exec?.command;
    const preSleep = pre && pre[0].endsWith("sleep") ? Number(pre[1]) : 0;
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    if (!(grace > preSleep + drain))
      fail(w, `terminationGracePeriodSeconds ${grace} must exceed preStop ${preSleep} s + drain_timeout ${drain} s`);
  }
}

const all = [];
for (const file of process.argv.slice(2)) {
  let docs;
  try {
    docs = parseAllDocuments(readFileSync(file, "utf8"), { uniqueKeys: true });
  } catch (e) {
    fail(file, e.message);
    continue;
  }
  if (!Array.isArray(docs)) docs = [docs];
  for (const doc of docs) {
    if (doc.errors.length) {
      fail(file, `YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj == null) continue;
    documents++;
    const where = `${file}: ${obj.kind ?? "?"}/${obj.metadata?.name ?? "?"}`;
    if (!obj.apiVersion || !obj.kind) {
      fail(where, "apiVersion and kind are required");
      continue;
    }
    let Model;
    try {
      Model = await modelFor(obj.apiVersion, obj.kind);
    } catch (e) {
      fail(where, `no schema for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    try {
      new Model(obj).validate();
    } catch (e) {
      fail(where, e.message);
      continue;
    }
    // A ccrelay configuration in a ConfigMap must at least be YAML.
    if (obj.kind === "ConfigMap") {
      for (const [key, text] of Object.entries(obj.data ?? {})) {
        if (!key.endsWith(".yaml")) continue;
        try {
          parseYaml(text, { uniqueKeys: true });
        } catch (e) {
          fail(`${where} key ${key}`, `YAML: ${e.message}`);
        }
      }
    }
    all.push({ obj, where });
    console.log(`kube: validate: ok ${where}`);
  }
}
const configMaps = new Map(all.filter((d) => d.obj.kind === "ConfigMap").map((d) => [d.obj.metadata.name, d.obj]));
for (const { obj, where } of all) {
  if (obj.kind === "Deployment") checkDeployment(obj, where, configMaps);
  if (obj.kind === "Service" && obj.spec.clusterIP === "None" && obj.spec.publishNotReadyAddresses !== true)
    fail(where, "the headless Service must publish not-ready addresses (replica discovery)");
}
if (documents === 0) fail(process.argv.slice(2).join(" "), "no documents");
console.log(`kube: validate: ${documents} documents, ${failures} failure(s)`);
process.exit(failures ? 1 : 0);
