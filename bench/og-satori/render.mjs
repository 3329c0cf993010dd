// The same OG card as render/og_card.py, drawn by satori (SVG) + resvg (PNG).
// Usage: node render.mjs N WARMUP  -> prints {"p50_ms", "p95_ms", "renders_per_s", "bytes"} as JSON.
// Each measured render has a different name, like a cache miss on our side.
import { readFileSync, writeFileSync } from "node:fs";
import satori from "satori";
import { Resvg } from "@resvg/resvg-js";

const N = Number(process.argv[2] || 100);
const WARMUP = Number(process.argv[3] || 10);
const fonts = [
  { name: "DejaVu Sans", data: readFileSync("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"), weight: 400, style: "normal" },
  { name: "DejaVu Sans", data: readFileSync("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"), weight: 700, style: "normal" },
];

const h = (type, style, children) => ({ type, props: { style, children } });

function card(name) {
  return h("div", {
    width: 1200, height: 630, display: "flex", flexDirection: "column",
    backgroundImage: "linear-gradient(135deg, #0b0b10, #302b63)", fontFamily: "DejaVu Sans",
  }, [
    h("div", { display: "flex", flexGrow: 1, alignItems: "center", padding: "0 80px" }, [
      h("div", {
        width: 256, height: 256, borderRadius: 128, background: "#7c3aed", color: "#fff", display: "flex",
        alignItems: "center", justifyContent: "center", fontSize: 104, fontWeight: 700, flexShrink: 0,
      }, name.slice(0, 2).toUpperCase()),
      h("div", { display: "flex", flexDirection: "column", marginLeft: 56, width: 740 }, [
        h("div", { fontSize: 68, fontWeight: 700, color: "#fff", lineClamp: 2, lineHeight: 1.15 }, name),
        h("div", { fontSize: 32, color: "#c9c9d6", marginTop: 16, lineClamp: 3, lineHeight: 1.35 },
          "Hello there, I build things with Tornado and ImageMagick. Hello there, I build things with Tornado and ImageMagick."),
        h("div", { fontSize: 28, color: "#7c3aed", marginTop: 24 }, "alice.hep.gg"),
      ]),
    ]),
    h("div", { height: 12, background: "#7c3aed", width: 1200 }, ""),
  ]);
}

async function render(name) {
  const svg = await satori(card(name), { width: 1200, height: 630, fonts });
  return new Resvg(svg, { fitTo: { mode: "original" } }).render().asPng();
}

for (let i = 0; i < WARMUP; i++) await render(`Warm Up ${i}`);
const times = [];
let bytes = 0;
const started = performance.now();
for (let i = 0; i < N; i++) {
  const t = performance.now();
  const png = await render(`Alice Example ${i}`);
  times.push(performance.now() - t);
  bytes = png.length;
  if (i === 0 && process.env.SATORI_SAMPLE) writeFileSync(process.env.SATORI_SAMPLE, png);
}
const elapsed = (performance.now() - started) / 1000;
times.sort((a, b) => a - b);
const pick = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
console.log(JSON.stringify({ p50_ms: pick(0.5), p95_ms: pick(0.95), renders_per_s: N / elapsed, bytes }));
