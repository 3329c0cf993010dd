// The satori + resvg peer as an HTTP server, so it is measured over HTTP like ours (bench/og_bench.py).
// Usage: PORT=8123 node server.mjs  -> GET /card.png?name=Alice renders a fresh card for every request
// (no cache: each request is a cold render, as a satori deployment without a CDN would do).
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import satori from "satori";
import { Resvg } from "@resvg/resvg-js";

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

createServer(async (req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (url.pathname === "/health") { res.end("ok"); return; }
  try {
    const png = await render(url.searchParams.get("name") || "Alice Example");
    res.writeHead(200, { "Content-Type": "image/png", "Content-Length": png.length });
    res.end(png);
  } catch (err) {
    res.writeHead(500);
    res.end(String(err));
  }
}).listen(Number(process.env.PORT), "127.0.0.1");
