<?php
// php frontreport.php META RESULTS DISK
// The Markdown report of benches/frontend (stdout), from the tab-separated files it collects:
//   META     key value
//   RESULTS  kind round flow live done npm_ci build status steps
//            (npm_ci, build: the scripts' seconds, "-" for atomdeploy; status: "ran/skipped"
//            for npm ci / the build; steps: atomdeploy's step=seconds,... or "-")
//   DISK     flow what kb entries

declare(strict_types=1);

[, $metaFile, $resultsFile, $diskFile] = $argv + array_fill(0, 4, '');

require __DIR__ . '/markdown.php';

[$meta, $m] = meta($metaFile);

const KINDS = [
    'php' => 'PHP only: 10 classes + 1 new',
    'front' => 'front end: 5 JS modules',
    'lock' => 'package-lock.json',
];
const FLOWS = ['atomdeploy' => 'atomdeploy', 'seed' => 'seed recipe', 'fresh' => 'fresh release'];

// $by[kind][flow] = list of rows
$by = [];
$stepNames = [];
foreach (rows($resultsFile) as $r) {
    [$kind, $round, $flow, $live, $done, $npmCi, $build, $status, $steps] = $r + array_fill(0, 9, '-');
    $parsed = [];
    if ($steps !== '-' && $steps !== '') {
        foreach (explode(',', $steps) as $pair) {
            [$name, $secs] = explode('=', $pair);
            $parsed[$name] = (float) $secs;
            $stepNames[$name] = true;
        }
    }
    [$ciStatus, $buildStatus] = explode('/', $status . '/?');
    $by[$kind][$flow][] = [
        'round' => (int) $round, 'live' => (float) $live, 'done' => (float) $done,
        'npm_ci' => $npmCi, 'build' => $build, 'ci_status' => $ciStatus, 'build_status' => $buildStatus,
        'steps' => $parsed,
    ];
}
$col = fn (array $rs, string $key) => array_map(fn ($r) => $r[$key], $rs);
$rounds = fewest_rounds($by, 2);
$present = array_filter(FLOWS, fn ($flow) => array_filter($by, fn ($f) => isset($f[$flow])) !== [], ARRAY_FILTER_USE_KEY);

$md = report_head('atomdeploy-hook benchmark: a PHP app with a front-end build', $m, 'all servers on it', [
    ['tools', sprintf('git %s, PHP %s, Composer %s, Node %s, npm %s', $m('git'), $m('php'), $m('composer'), $m('node'), $m('npm'))],
    ['atomdeploy-hook', isset($meta['atomdeploy'])
        ? sprintf('%s, commit %s, release build of %s', $m('atomdeploy'), $m('commit'), $m('binary_built'))
        : 'not run (`--flows`)'],
    ['app', $m('app')],
    ['rounds', sprintf('%d pushes of each kind to each server, alternating servers push by push', $rounds)],
]);
if (str_contains($m('filesystem'), 'no journal')) {
    $md .= "\n> **Warning**: the work directory was on ext4 without a journal, which makes creating files "
        . "slow for minutes after every delete (benches/README.md). Run again with `--workdir` on a "
        . "journaled filesystem.\n";
}

$md .= <<<MD

## What is measured

A PHP app with a Vite-like front end: `package.json` with one local dependency
(`"bench-ui": "file:packages/ui"`, copied into `node_modules/` by npm as a registry package
would be unpacked; `install-links=true`), `package-lock.json` from a real `npm install
--offline`, sources in `resources/js/`, and `"build": "node build.mjs"`, a dependency-free bundler
that minifies every entry with what it imports from `node_modules/` into hashed
`public/build/assets/*.js` and `public/build/manifest.json`. `node_modules/` and
`public/build/` are not committed. Nothing is downloaded.

Three servers side by side, each a bare repository whose `post-receive` hook deploys the app:

- **atomdeploy**: `atomdeploy-hook install`, its default `deploy.yml` plus
  ```yaml
  build:
    commands:
      - run: npm ci --prefer-offline
        inputs: [package.json, package-lock.json]
      - npm run build
    inputs: [package.json, package-lock.json, resources/, build.mjs]
  exclude: [node_modules/]
  ```
  The build runs in `application/`, where `node_modules/` and `public/build/` stay between
  deploys; a step whose inputs did not change since its last run is skipped.
- **seed recipe**: `git checkout -f` into `application/`, `composer install`, `{$m('npm_ci')}`,
  `npm run build`, `cp -a application builds/<stamp>`, `ln -sfn` + `mv -T` of `latest`, keep 5.
- **fresh release** (Deployer/Capistrano): `git archive | tar -x` into a new
  `releases/<stamp>`, `composer install`, `{$m('npm_ci')}` and `npm run build` there from
  scratch, the same swap, keep 5.

All run `composer {$m('composer_args')}`. Round after round the same new commit of each kind is
pushed to each server in turn, the order rotating by one server each round: **PHP only** (10 classes in `src/` changed, one added: no
front-end input changed), **front end** (5 modules in `resources/js/` changed: the build must
run, `npm ci` need not), **package-lock.json** (`bench-ui`'s version bumped and one of its
modules changed, lock rewritten by `npm install ./packages/ui`: both must run).

- **push → live**: from just before `git push` to the moment `latest` points at the new build
  (atomdeploy: `switched_at` in its deploy log; the scripts: `date +%s.%N` right after `mv -T`).
  **push → done**: wall time of `git push`.
- Every deploy is checked: the live `public/build/` equals the clone's own `node build.mjs` of
  the pushed commit file for file, the pushed sources are there, and atomdeploy's build has no
  `node_modules/`.
- `sync` before each push; `receive.autogc` off. Medians of all rounds; ratios are
  median / median, above 1× meaning atomdeploy is faster.

MD;

foreach (['live' => 'push → live', 'done' => 'push → done'] as $key => $title) {
    $md .= "\n## $title (median of $rounds)\n\n";
    $rows = [];
    foreach (KINDS as $kind => $kindLabel) {
        $med = [];
        foreach (FLOWS as $flow => $_) {
            $med[$flow] = median($col($by[$kind][$flow] ?? [], $key));
        }
        $rows[] = [$kindLabel, sec($med['atomdeploy']), sec($med['seed']), sec($med['fresh']),
            ratio($med['seed'], $med['atomdeploy']), ratio($med['fresh'], $med['atomdeploy'])];
    }
    $md .= table(['push', 'atomdeploy', 'seed recipe', 'fresh release', 'seed / atomdeploy', 'fresh / atomdeploy'], $rows, [1, 2, 3, 4, 5]);
}

if (isset($present['atomdeploy'])) {
    $md .= "\n## What atomdeploy's build step did\n\n";
    $md .= "From each push's output: how many of the $rounds pushes of a kind ran `npm ci` and "
        . "`npm run build` (the rest skipped them; `?` when the output did not say), and the median "
        . "of each step in its deploy log.\n\n";
    $names = array_keys($stepNames);
    $rows = [];
    foreach (KINDS as $kind => $kindLabel) {
        $rs = $by[$kind]['atomdeploy'] ?? [];
        $say = function (string $key) use ($rs): string {
            $n = count($rs);
            $ran = count(array_filter($rs, fn ($r) => $r[$key] === 'ran'));
            $unknown = count(array_filter($rs, fn ($r) => $r[$key] !== 'ran' && $r[$key] !== 'skipped'));
            return ($ran === 0 && $unknown === 0 ? 'skipped' : "ran $ran of $n") . ($unknown ? " ($unknown ?)" : '');
        };
        $row = [$kindLabel, $say('ci_status'), $say('build_status')];
        foreach ($names as $name) {
            $row[] = sec(median(array_map(fn ($r) => $r['steps'][$name] ?? null, $rs)));
        }
        $rows[] = $row;
    }
    $md .= table(array_merge(['push', 'npm ci', 'npm run build'], $names), $rows, range(3, count($names) + 2));
}

$scripts = array_intersect_key($present, ['seed' => 1, 'fresh' => 1]);
if ($scripts !== []) {
    $md .= "\n## npm ci and the build in the scripts (median of $rounds)\n\n";
    $md .= "They run both on every push.\n\n";
    $rows = [];
    foreach (KINDS as $kind => $kindLabel) {
        $row = [$kindLabel];
        foreach ($scripts as $flow => $_) {
            $rs = $by[$kind][$flow] ?? [];
            $row[] = sec(median($col($rs, 'npm_ci')));
            $row[] = sec(median($col($rs, 'build')));
        }
        $rows[] = $row;
    }
    $header = ['push'];
    foreach ($scripts as $flow => $flowLabel) {
        $header[] = "$flowLabel: npm ci";
        $header[] = "$flowLabel: build";
    }
    $md .= table($header, $rows, range(1, 2 * count($scripts)));
}

$md .= "\n## Disk\n\n";
$md .= "After the timed rounds (`du -sk`, one run per directory, so hard links count once). The seed "
    . "recipe copies `node_modules/` into every build; atomdeploy excludes it; the fresh release "
    . "keeps one per release.\n\n";
$rows = [];
foreach (rows($diskFile) as [$flow, $what, $used, $entries]) {
    $rows[] = [FLOWS[$flow] ?? $flow, $what === 'application/' ? 'application/ (working copy)' : "$entries $what",
        kb((float) $used)];
}
$md .= table(['server', 'what', 'size'], $rows, [2]);

$md .= "\n<details><summary>Every push (seconds)</summary>\n\n";
$rows = [];
foreach (KINDS as $kind => $_) {
    foreach (FLOWS as $flow => $__) {
        foreach ($by[$kind][$flow] ?? [] as $r) {
            $rows[] = [$kind, $r['round'], $flow, sprintf('%.3f', $r['live']), sprintf('%.3f', $r['done']),
                $r['npm_ci'] === '-' ? $r['ci_status'] : sprintf('%.3f', (float) $r['npm_ci']),
                $r['build'] === '-' ? $r['build_status'] : sprintf('%.3f', (float) $r['build'])];
        }
    }
}
usort($rows, fn ($a, $b) => [array_search($a[0], array_keys(KINDS)), $a[1], array_search($a[2], array_keys(FLOWS))]
    <=> [array_search($b[0], array_keys(KINDS)), $b[1], array_search($b[2], array_keys(FLOWS))]);
$md .= table(['push', 'round', 'server', 'live', 'done', 'npm ci', 'build'], $rows, [3, 4, 5, 6]);
$md .= "\n</details>\n";

echo $md;
