// build.mjs: the front-end build of the app that benches/frontend generates (copied from
// benches/lib/build.mjs). `npm run build` runs it. No dependencies, so the bench needs no package
// download; it stands in for `vite build` and, like it, reads node_modules/ and costs time in
// proportion to the sources it bundles.
//
// Every resources/js/*.js is an entry. For each, it follows the static imports (relative ones,
// and bare ones into node_modules/), turns every module into a function of a small module table,
// minifies each with a tokenizer (comments and whitespace dropped, local names kept), and writes
// public/build/assets/<entry>-<hash>.js and a Vite-style public/build/manifest.json. The output is
// deterministic: the same sources give the same files and the same hashes, so the bench can
// compare a server's build with the one made in the developer's clone.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const root = process.cwd();
const outDir = path.join(root, 'public', 'build');
const entryDir = path.join(root, 'resources', 'js');

const IMPORT = /^import\s+(?:\{([^}]*)\}\s+from\s+)?['"]([^'"]+)['"];?[ \t]*$/gm;
const EXPORT = /^export\s+(?:(?:async\s+)?function\*?|class|const|let|var)\s+([A-Za-z_$][\w$]*)/gm;

function resolve(spec, from) {
    const file = spec.startsWith('.')
        ? path.resolve(path.dirname(from), spec)
        : path.join(root, 'node_modules', spec);
    if (!fs.existsSync(file)) {
        throw new Error(`cannot resolve '${spec}' imported by ${path.relative(root, from)}`
            + (spec.startsWith('.') ? '' : ' (is node_modules/ installed? run npm ci)'));
    }
    return file;
}

// Tokens of the small JavaScript subset the generated sources use: enough to drop comments and
// whitespace safely (strings and template literals stay as they are).
function minify(src) {
    let out = '';
    let i = 0;
    let last = '';
    const word = (c) => /[\w$]/.test(c);
    while (i < src.length) {
        const c = src[i];
        if (c === '/' && src[i + 1] === '/') {
            while (i < src.length && src[i] !== '\n') i++;
        } else if (c === '/' && src[i + 1] === '*') {
            const end = src.indexOf('*/', i + 2);
            i = end < 0 ? src.length : end + 2;
        } else if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
            let j = i;
            let newline = false;
            while (j < src.length && /\s/.test(src[j])) {
                if (src[j] === '\n') newline = true;
                j++;
            }
            // A space only between two word characters; a newline where ASI could matter.
            if (word(last) && j < src.length && word(src[j])) out += newline ? '\n' : ' ';
            else if (newline && last !== '' && !'{;,(['.includes(last) && !'})];,.'.includes(src[j] ?? '')) out += '\n';
            i = j;
            continue;
        } else if (c === '"' || c === "'" || c === '`') {
            let j = i + 1;
            while (j < src.length && src[j] !== c) j += src[j] === '\\' ? 2 : 1;
            out += src.slice(i, j + 1);
            i = j + 1;
        } else {
            out += c;
            i++;
        }
        last = out[out.length - 1] ?? '';
    }
    return out;
}

function bundle(entry) {
    const ids = new Map();
    const modules = [];
    const visit = (file) => {
        if (ids.has(file)) return ids.get(file);
        const id = ids.size;
        ids.set(file, id);
        modules.push(null);
        let src = fs.readFileSync(file, 'utf8');
        const exported = [...src.matchAll(EXPORT)].map((m) => m[1]);
        src = src.replace(IMPORT, (_, names, spec) => {
            const dep = visit(resolve(spec, file));
            return names ? `const {${names}} = __require(${dep});` : `__require(${dep});`;
        });
        src = src.replace(/^export\s+/gm, '');
        const body = minify(src) + exported.map((n) => `;__exports.${n}=${n}`).join('');
        modules[id] = `/* ${path.relative(root, file)} */ function(__exports, __require) {${body}\n}`;
        return id;
    };
    visit(entry);
    return '(() => {\nconst __modules = [\n' + modules.join(',\n') + '\n];\n'
        + 'const __cache = [];\n'
        + 'const __require = (id) => __cache[id] ?? (__cache[id] = {}, __modules[id](__cache[id], __require), __cache[id]);\n'
        + '__require(0);\n})();\n';
}

const started = Date.now();
const entries = fs.readdirSync(entryDir).filter((f) => f.endsWith('.js')).sort();
if (entries.length === 0) throw new Error('no entry in resources/js/');
fs.rmSync(outDir, { recursive: true, force: true });
fs.mkdirSync(path.join(outDir, 'assets'), { recursive: true });
const manifest = {};
let bytes = 0;
for (const name of entries) {
    const code = bundle(path.join(entryDir, name));
    const hash = createHash('sha256').update(code).digest('base64url').slice(0, 8);
    const file = `assets/${name.replace(/\.js$/, '')}-${hash}.js`;
    fs.writeFileSync(path.join(outDir, file), code);
    manifest[`resources/js/${name}`] = { file, name: name.replace(/\.js$/, ''), src: `resources/js/${name}`, isEntry: true };
    bytes += code.length;
}
fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
console.log(`build.mjs: ${entries.length} entries, ${(bytes / 1024).toFixed(0)} KiB in public/build/assets/ (${Date.now() - started} ms)`);
