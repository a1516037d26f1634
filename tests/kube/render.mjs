// SPDX-License-Identifier: Apache-2.0
// Renders deploy/kubernetes manifests for `podman kube play --network host` on one machine (tests/kube.sh).
// What changes, and why:
//   - the ccrelay configurations in the manifests' ConfigMaps keep every key but their addresses, which
//     become the test's loopback ports (and upstreams); a gateway `probe` key is dropped when asked
//     (--no-probe: a build whose gateway has no probe listener yet);
//   - every ConfigMap and Secret volume becomes a hostPath directory holding its keys as files (root,
//     group 10001, mode 0640, as fsGroup and defaultMode 0440 give in a cluster): the manifests' own
//     ConfigMaps are written by this script, the ones an operator creates with kubectl come from the
//     test (--data NAME=DIR). podman 4.3 writes a Secret's data undecoded, drops stringData, crashes on
//     a secret volume without `optional`, and keeps ConfigMap volumes across runs;
//   - names get a per-run suffix (Deployments, emptyDir volumes, which podman turns into named volumes),
//     so concurrent runs never meet; one replica (host networking: replicas would share ports);
//   - restartPolicy OnFailure: podman 4.3 applies a Deployment's Always to its init containers too and
//     restarts the trust-store init container forever;
//   - containerPorts are removed (podman refuses port mappings with host networking);
//   - probes are removed (podman 4.3 runs an httpGet probe as `curl` inside the container, and the image
//     has no curl): the test probes the same paths from the host instead;
//   - the image is the one CI built. Services and PodDisruptionBudgets are dropped.
//
//   node render.mjs --suffix S --image IMG --out DIR --set KEY=VALUE... --data NAME=DIR... [--no-probe] FILE...
//   --set gateway.tunnel=ADDR gateway.public=ADDR gateway.probe=ADDR agent.admin=ADDR agent.gateway=ADDR
//         route.NAME=URL
// Writes DIR/play.yaml and the ConfigMap directories under DIR.
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments, parse as parseYaml, stringify } from "yaml";

const opts = { set: {}, data: {}, files: [], probe: true };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const kv = () => {
    const v = argv[++i];
    const eq = v.indexOf("=");
    if (eq < 1) throw new Error(`${a} needs KEY=VALUE, got ${v}`);
    return [v.slice(0, eq), v.slice(eq + 1)];
  };
  if (a === "--suffix") opts.suffix = argv[++i];
  else if (a === "--image") opts.image = argv[++i];
  else if (a === "--out") opts.out = argv[++i];
  else if (a === "--no-probe") opts.probe = false;
  else if (a === "--set") { const [k, v] = kv(); opts.set[k] = v; }
  else if (a === "--data") { const [k, v] = kv(); opts.data[k] = v; }
  else opts.files.push(a);
}
for (const k of ["suffix", "image", "out"]) if (!opts[k]) throw new Error(`--${k} is required`);

function need(key) {
  if (!(key in opts.set)) throw new Error(`--set ${key}=... is required`);
  return opts.set[key];
}

// The test's addresses in a ccrelay configuration; everything else stays as the manifest has it.
function patchConfig(text, where) {
  const conf = parseYaml(text);
  if (conf.tunnel && conf.public) {
    conf.tunnel.listen = need("gateway.tunnel");
    conf.public.listen = need("gateway.public");
    if (conf.probe && opts.probe) conf.probe.listen = need("gateway.probe");
    else delete conf.probe;
    // One replica on the host: no cluster DNS for the headless Service, no Pod IP in the environment.
    delete conf.replicas;
  } else if (conf.routes) {
    if (conf.admin) conf.admin.listen = need("agent.admin");
    conf.gateway.address = need("agent.gateway");
    for (const r of conf.routes) r.upstream.url = need(`route.${r.name}`);
  } else {
    throw new Error(`${where}: neither a gateway nor an agent configuration`);
  }
  return stringify(conf);
}

function writeDir(dir, entries) {
  mkdirSync(dir, { recursive: true, mode: 0o750 });
  chownSync(dir, 0, 10001);
  chmodSync(dir, 0o750);
  for (const [key, value] of entries) {
    const f = join(dir, key);
    writeFileSync(f, value);
    chownSync(f, 0, 10001);
    chmodSync(f, 0o640);
  }
}

const docs = [];
for (const file of opts.files) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const obj = doc.toJS();
    if (obj) docs.push(obj);
  }
}

const dirOf = {}; // ConfigMap/Secret name -> host directory
for (const obj of docs.filter((d) => d.kind === "ConfigMap")) {
  const dir = join(opts.out, `configmap-${obj.metadata.name}`);
  const entries = Object.entries(obj.data ?? {}).map(([k, v]) =>
    [k, k.endsWith(".yaml") ? patchConfig(v, `ConfigMap ${obj.metadata.name} ${k}`) : v]);
  writeDir(dir, entries);
  dirOf[obj.metadata.name] = dir;
}
Object.assign(dirOf, opts.data);

const out = [];
for (const obj of docs.filter((d) => d.kind === "Deployment")) {
  obj.metadata.name = `${obj.metadata.name}-${opts.suffix}`;
  obj.spec.replicas = 1;
  const spec = obj.spec.template.spec;
  spec.restartPolicy = "OnFailure";
  const rename = {};
  spec.volumes = (spec.volumes ?? []).map((v) => {
    const source = v.configMap?.name ?? v.secret?.secretName;
    if (source !== undefined) {
      if (!dirOf[source]) throw new Error(`Deployment ${obj.metadata.name}: no data for ${source} (--data ${source}=DIR)`);
      return { name: v.name, hostPath: { path: dirOf[source], type: "Directory" } };
    }
    if (v.emptyDir) {
      rename[v.name] = `${v.name}-${opts.suffix}`;
      return { name: rename[v.name], emptyDir: {} };
    }
    throw new Error(`Deployment ${obj.metadata.name}: volume ${v.name} of a kind this test does not render`);
  });
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    c.image = opts.image;
    c.imagePullPolicy = "IfNotPresent";
    delete c.readinessProbe;
    delete c.livenessProbe;
    // podman 4.3 has no downward API for the Pod IP; the rendered gateway runs without replicas.
    if (c.env) c.env = c.env.filter((e) => e.valueFrom?.fieldRef?.fieldPath !== "status.podIP");
    if (c.env && c.env.length === 0) delete c.env;
    delete c.startupProbe;
    delete c.ports;
    for (const m of c.volumeMounts ?? []) if (rename[m.name]) m.name = rename[m.name];
  }
  out.push(stringify(obj));
}
if (out.length === 0) throw new Error("no Deployment in " + opts.files.join(" "));
writeFileSync(join(opts.out, "play.yaml"), out.join("---\n"));
console.log(join(opts.out, "play.yaml"));
