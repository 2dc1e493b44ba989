// Bundles the web app into the Python package (src/lmdock/http/webapp), which `lmdock serve` serves at /.
// `node build.mjs` builds once; `node build.mjs --watch` rebuilds on every change (reload the page).
import * as esbuild from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "src", "lmdock", "http", "webapp");
const watch = process.argv.includes("--watch");

// Writes index.html naming the hashed bundles; the server caches /_app/* forever and index.html never.
const writeIndex = {
  name: "index-html",
  setup(build) {
    build.onEnd(async (result) => {
      if (result.errors.length) return;
      const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
      const js = outputs.find((p) => p.endsWith(".js"));
      const css = outputs.find((p) => p.endsWith(".css"));
      const html = (await readFile(join(here, "index.html"), "utf8"))
        .replace("%CSS%", `/_app/${css}`)
        .replace("%JS%", `/_app/${js}`);
      await writeFile(join(outdir, "index.html"), html);
      console.log(`web app built into ${outdir}`);
    });
  },
};

await rm(outdir, { recursive: true, force: true });
await mkdir(join(outdir, "_app"), { recursive: true });
const options = {
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  minify: !watch,
  sourcemap: watch ? "inline" : false,
  format: "esm",
  target: ["es2022"],
  outdir: join(outdir, "_app"),
  entryNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  jsx: "automatic",
  jsxImportSource: "preact",
  logLevel: "warning",
  plugins: [writeIndex],
};
if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log("watching web/src; reload the page after a rebuild");
} else {
  await esbuild.build(options);
}
