// Builds the web app into web/dist: the script and styles bundled and
// named by content hash (cached for good), index.html and the service
// worker (never cached, so a new build is picked up) naming them.
import * as esbuild from 'esbuild'
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dist = join(here, 'dist')
rmSync(dist, { recursive: true, force: true })
mkdirSync(dist, { recursive: true })

const result = await esbuild.build({
  entryPoints: [join(here, 'src/main.js'), join(here, 'src/app.css')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome90', 'safari14', 'firefox90'],
  outdir: join(dist, 'assets'),
  entryNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning'
})

const outputs = Object.keys(result.metafile.outputs).map((p) => '/assets/' + basename(p))
const script = outputs.find((p) => p.endsWith('.js'))
const style = outputs.find((p) => p.endsWith('.css'))

cpSync(join(here, 'public'), dist, { recursive: true })
const html = readFileSync(join(here, 'index.html'), 'utf8')
  .replace('__SCRIPT__', script)
  .replace('__STYLE__', style)
writeFileSync(join(dist, 'index.html'), html)

const shell = ['/', '/index.html', '/manifest.webmanifest', '/icon.svg', '/icon-192.png', '/icon-512.png', ...outputs]
const version = outputs.map((p) => basename(p)).join(',')
const sw = readFileSync(join(here, 'src/sw.js'), 'utf8')
  .replace('__SHELL__', JSON.stringify(shell))
  .replace('__VERSION__', JSON.stringify(version))
writeFileSync(join(dist, 'sw.js'), sw)

// Gzipped twins, served to browsers that accept them (the server picks
// `x.gz` for `x`): the first load of a phone on a slow network is small.
for (const path of [...outputs.map((p) => join(dist, p)), join(dist, 'index.html'), join(dist, 'sw.js')]) {
  writeFileSync(path + '.gz', gzipSync(readFileSync(path), { level: 9 }))
}

let bytes = 0
for (const [path, out] of Object.entries(result.metafile.outputs)) {
  bytes += out.bytes
  console.log(`${basename(path)}  ${(out.bytes / 1024).toFixed(1)} KiB`)
}
console.log(`web/dist built: ${(bytes / 1024).toFixed(1)} KiB of script and styles (before compression)`)
