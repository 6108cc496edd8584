<?php
// The front end that benches/frontend adds to the PHP app genapp.php generates.
//
//   php frontapp.php gen DIR COMPONENTS WIDGETS
//   php frontapp.php mutate DIR KIND ROUND COMPONENTS WIDGETS
//
// gen writes, into the app at DIR:
//   package.json       "build": "node build.mjs", one dependency: "bench-ui": "file:packages/ui"
//   .npmrc             install-links=true: npm copies the local package into node_modules/ (as it
//                      would unpack a registry package) instead of symlinking it
//   build.mjs          the build (a copy of lib/build.mjs)
//   packages/ui/       the local package: package.json, index.js and WIDGETS modules
//                      src/partNNN/widgetNNNNN.js
//   resources/js/      four entries (app, admin, shop, account) and COMPONENTS modules
//                      components/groupNNN/CompNNNNN.js; component i belongs to entry i % 4 and
//                      imports two widgets of bench-ui
//   .gitignore         /node_modules/ and /public/build/ added
// package-lock.json is the caller's (a real `npm install --offline`).
//
// mutate makes one push's front-end change (the PHP-only push is mutate.php's "code"):
//   front  5 components changed (a label), in different entries
//   lock   bench-ui's version bumped to 1.0.ROUND and one widget that a component imports changed;
//          the caller then runs `npm install --offline ./packages/ui` to rewrite package-lock.json
// and prints the checks of mutate.php's format ("same APP_PATH BUILD_PATH"); the bench compares
// public/build/ with the clone's own build besides.

declare(strict_types=1);

require __DIR__ . '/app.php';

const ENTRIES = ['app', 'admin', 'shop', 'account'];

function component_name(int $i): string
{
    return sprintf('Comp%05d', $i);
}

function component_path(int $i): string
{
    return sprintf('resources/js/components/group%03d/%s.js', intdiv($i, PER_DIR), component_name($i));
}

function widget_path(int $i): string
{
    return sprintf('src/part%03d/widget%05d.js', intdiv($i, 2 * PER_DIR), $i);
}

/** @return array{int, int} the two widgets component $i imports */
function component_widgets(int $i, int $widgets): array
{
    return [($i * 7) % $widgets, ($i * 13 + 5) % $widgets];
}

function component_source(int $i, int $widgets, string $rev): string
{
    [$a, $b] = component_widgets($i, $widgets);
    $name = component_name($i);
    $n = sprintf('%05d', $i);
    $wa = sprintf('widget%05d', $a);
    $wb = sprintf('widget%05d', $b);
    $pa = widget_path($a);
    $pb = widget_path($b);
    return <<<JS
// $name of the generated benchmark app: a list with a filter, rendered through two widgets.
import { $wa } from 'bench-ui/$pa';
import { $wb } from 'bench-ui/$pb';

export const LABEL_$n = 'component $i, $rev';

/**
 * Renders the items that match the filter into root, each through both widgets.
 *
 * @param {{ innerHTML: string }} root
 * @param {Array<{ id: number, title: string, tags: string[] }>} items
 * @param {string} filter
 */
export function render$n(root, items, filter = '') {
    const rows = [];
    for (const item of items) {
        // Case-insensitive match on the title or any tag.
        const needle = filter.toLowerCase();
        const hit = needle === ''
            || item.title.toLowerCase().includes(needle)
            || item.tags.some((tag) => tag.toLowerCase() === needle);
        if (!hit) {
            continue;
        }
        rows.push(`<li data-id="\${item.id}">\${{$wa}(item.title)} \${{$wb}(item.tags.join(', '))}</li>`);
    }
    root.innerHTML = `<section class="c-$n"><h2>\${LABEL_$n}</h2><ul>\${rows.join('')}</ul></section>`;
    return rows.length;
}

export class $name {
    constructor(root) {
        this.root = root;
        this.items = [];
        this.filter = '';
    }

    /* Adds an item and renders again. */
    add(item) {
        this.items.push({ id: this.items.length + 1, tags: [], ...item });
        return this.render();
    }

    setFilter(filter) {
        this.filter = String(filter);
        return this.render();
    }

    render() {
        return render$n(this.root, this.items, this.filter);
    }
}

JS;
}

function widget_source(int $i, string $rev): string
{
    $name = sprintf('widget%05d', $i);
    return <<<JS
// $name of bench-ui, the benchmark app's local npm package.

const CACHE = new Map();

/**
 * Escapes text for HTML and wraps it in a span of this widget's class; remembers the last
 * 100 results.
 *
 * @param {string} text
 * @returns {string}
 */
export function $name(text) {
    const key = String(text);
    if (CACHE.has(key)) {
        return CACHE.get(key);
    }
    const escaped = key
        .replaceAll('&', '&amp;')
        .replaceAll('<', '&lt;')
        .replaceAll('>', '&gt;')
        .replaceAll('"', '&quot;');
    const html = `<span class="w-$i" data-rev="$rev">\${escaped}</span>`;
    if (CACHE.size >= 100) {
        CACHE.delete(CACHE.keys().next().value);
    }
    CACHE.set(key, html);
    return html;
}

export const VERSION_$i = '$rev';

JS;
}

function set_label(string $path, string $rev): void
{
    $text = file_get_contents($path);
    $new = preg_replace("/(export const (?:LABEL|VERSION)_\\d+ = '[^']*?)(?:, r\\d+)?';/", "\$1, $rev';", $text, 1, $n);
    if ($n !== 1) {
        throw new RuntimeException("no label in $path");
    }
    write_file($path, $new);
}

function gen(string $dir, int $components, int $widgets): void
{
    chdir($dir);
    write_file('package.json', json_out([
        'name' => 'bench-app',
        'private' => true,
        'type' => 'module',
        'scripts' => ['build' => 'node build.mjs'],
        'dependencies' => ['bench-ui' => 'file:packages/ui'],
    ]));
    write_file('.npmrc', "install-links=true\nfund=false\naudit=false\n");
    if (!copy(__DIR__ . '/build.mjs', 'build.mjs')) {
        throw new RuntimeException('cannot copy build.mjs');
    }
    write_file('.gitignore', file_get_contents('.gitignore') . "/node_modules/\n/public/build/\n");
    write_file('packages/ui/package.json', json_out([
        'name' => 'bench-ui',
        'version' => '1.0.0',
        'description' => 'The benchmark app\'s front-end library, a local file: dependency.',
        'type' => 'module',
        'main' => 'index.js',
        'license' => 'MIT',
    ]));
    write_file('packages/ui/index.js', "export const NAME = 'bench-ui';\n");
    for ($i = 0; $i < $widgets; $i++) {
        write_file('packages/ui/' . widget_path($i), widget_source($i, 'r0'));
    }
    $imports = array_fill_keys(ENTRIES, []);
    $calls = array_fill_keys(ENTRIES, []);
    for ($i = 0; $i < $components; $i++) {
        write_file(component_path($i), component_source($i, $widgets, 'r0'));
        $entry = ENTRIES[$i % count(ENTRIES)];
        $n = sprintf('%05d', $i);
        $imports[$entry][] = "import { render$n, LABEL_$n } from './" . substr(component_path($i), strlen('resources/js/')) . "';";
        $calls[$entry][] = "    count += render$n(mount(LABEL_$n), items, filter);";
    }
    foreach (ENTRIES as $entry) {
        write_file("resources/js/$entry.js", "// The $entry entry of the generated benchmark app.\n"
            . "import { NAME } from 'bench-ui/index.js';\n"
            . implode("\n", $imports[$entry]) . "\n\n"
            . "export function boot(mount, items, filter = '') {\n    let count = 0;\n"
            . implode("\n", $calls[$entry]) . "\n    return `\${NAME}: \${count} rows`;\n}\n");
    }
}

function mutate(string $dir, string $kind, int $round, int $components, int $widgets): void
{
    chdir($dir);
    switch ($kind) {
        case 'front':
            // Five components spread over the entries, so that every entry but one changes.
            $step = max(1, intdiv($components, 5));
            foreach (array_unique(array_map(fn ($k) => ($round * 3 + $k * $step + $k) % $components, range(0, 4))) as $i) {
                set_label(component_path($i), "r$round");
                echo 'same ' . component_path($i) . ' ' . component_path($i) . "\n";
            }
            break;
        case 'lock':
            $json = json_decode(file_get_contents('packages/ui/package.json'), true, 512, JSON_THROW_ON_ERROR);
            $json['version'] = "1.0.$round";
            write_file('packages/ui/package.json', json_out($json));
            $w = component_widgets(($round * 3) % $components, $widgets)[0];
            set_label('packages/ui/' . widget_path($w), "r$round");
            echo "same packages/ui/package.json packages/ui/package.json\n";
            echo 'same packages/ui/' . widget_path($w) . ' packages/ui/' . widget_path($w) . "\n";
            break;
        default:
            fwrite(STDERR, "unknown kind $kind (front, lock)\n");
            exit(2);
    }
}

$cmd = $argv[1] ?? '';
if ($cmd === 'gen' && $argc === 5) {
    gen($argv[2], (int) $argv[3], (int) $argv[4]);
} elseif ($cmd === 'mutate' && $argc === 7) {
    mutate($argv[2], $argv[3], (int) $argv[4], (int) $argv[5], (int) $argv[6]);
} else {
    fwrite(STDERR, "usage: php frontapp.php gen DIR COMPONENTS WIDGETS\n"
        . "       php frontapp.php mutate DIR KIND ROUND COMPONENTS WIDGETS\n");
    exit(2);
}
