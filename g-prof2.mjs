import { readFileSync } from 'node:fs';
const prof = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map(); for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const W = 250_000; const windows = new Map();
let t = 0;
const bucket = (id) => { // innermost frame from /work/main/dist, else package
  let n = byId.get(id); let pkg;
  while (n) { const u = n.callFrame.url; if (u.includes('/dist/')) return u.split('/dist/')[1] + ':' + n.callFrame.functionName; if (!pkg && u) { const m = u.match(/node_modules\/((@[^/]+\/)?[^/]+)/); pkg = m ? m[1] : u.slice(0,40);} n = byId.get(parent.get(n.id)); }
  return pkg ?? '(gc/idle)';
};
for (let i = 0; i < prof.samples.length; i++) { t += prof.timeDeltas[i]; const w = Math.floor(t / W); const k = bucket(prof.samples[i]); const m = windows.get(w) ?? new Map(); m.set(k, (m.get(k) ?? 0) + prof.timeDeltas[i]); windows.set(w, m); }
for (const [w, m] of windows) { const top = [...m].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${(v/1000).toFixed(0)}`).join(' | '); console.log(`${(w*W/1000).toFixed(0).padStart(6)} ms: ${top}`); }
