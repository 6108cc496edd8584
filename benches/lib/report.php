<?php
// php report.php META APPS RESULTS MEMORY DISK FLOOR
// Turns the tab-separated files benches/run collects into the Markdown report (stdout).
//   META     key value
//   APPS     size files lib src templates build_files build_kb
//   RESULTS  size kind round flow live done switch flush rename hook method steps mtime_live
//   MEMORY   size kind hook_kb tree_kb
//   DISK     size flow what kb entries
//   FLOOR    size round seconds

declare(strict_types=1);

[, $metaFile, $appsFile, $resultsFile, $memoryFile, $diskFile, $floorFile] = $argv + array_fill(0, 7, '');

require __DIR__ . '/markdown.php';

[, $m] = meta($metaFile);

$apps = [];
foreach (rows($appsFile) as [$size, $files, $lib, $src, $tpl, $buildFiles, $buildKb]) {
    $apps[$size] = compact('files', 'lib', 'src', 'tpl', 'buildFiles', 'buildKb');
}

const KINDS = ['content' => 'content: 10 templates', 'code' => 'code: 10 classes + 1 new', 'lock' => 'composer.lock'];
const FLOWS = ['atomdeploy' => 'atomdeploy', 'seed' => 'seed recipe', 'fresh' => 'fresh release'];

// $by[size][kind][flow] = list of result rows (assoc)
$by = [];
$stepNames = [];
$methods = [];
$crossCheck = [];
foreach (rows($resultsFile) as $r) {
    [$size, $kind, $round, $flow, $live, $done, $switch, $flush, $rename, $hook, $method, $steps, $mtimeLive] = $r;
    $parsedSteps = [];
    if ($steps !== '-') {
        foreach (explode(',', $steps) as $pair) {
            [$name, $secs] = explode('=', $pair);
            $parsedSteps[$name] = (float) $secs;
            $stepNames[$name] = true;
        }
        $methods[$method] = true;
    }
    $by[$size][$kind][$flow][] = [
        'round' => (int) $round, 'live' => (float) $live, 'done' => (float) $done,
        'switch' => $switch, 'flush' => $flush, 'rename' => $rename, 'hook' => $hook, 'steps' => $parsedSteps,
    ];
    $crossCheck[$flow][] = abs((float) $live - (float) $mtimeLive);
}
$sizes = array_keys($by);
$label = fn ($size) => isset($apps[$size]) ? num($apps[$size]['files']) . ' files' : num($size) . ' files';
$col = fn (array $rs, string $key) => array_map(fn ($r) => $r[$key], $rs);
$rounds = fewest_rounds($by, 3);

$md = report_head('atomdeploy-hook benchmarks', $m, 'all servers on it', [
    ['tools', sprintf('git %s, PHP %s, Composer %s', $m('git'), $m('php'), $m('composer'))],
    ['atomdeploy-hook', sprintf('%s, commit %s, release build of %s, `snapshot: %s`', $m('atomdeploy'), $m('commit'), $m('binary_built'), $m('snapshot'))],
    ['rounds', sprintf('%d pushes of each kind to each server, alternating servers push by push', $rounds)],
]);

if (str_contains($m('filesystem'), 'no journal')) {
    $md .= "\n> **Warning**: the work directory was on ext4 without a journal. Such a filesystem does not "
        . "reuse an inode freed in the last 5–300 s and scans past every one, so after each deploy "
        . "removed an old build, creating files was up to 40× slower than normal. These timings "
        . "say more about that than about the deploy flows; run again with `--workdir` on a "
        . "journaled filesystem.\n";
}

$md .= <<<MD

## What is measured

Three servers side by side, each a bare repository whose `post-receive` hook deploys the app:

- **atomdeploy**: `atomdeploy-hook install` with its default `deploy.yml` (checkout into
  `application/` with a persistent `vendor/`, composer, copy into `builds/<stamp>`, flush and
  rename of `latest`, keep 5).
- **seed recipe**: `git --work-tree=application checkout -f main`, `composer install` in
  `application/`, `cp -a application builds/<stamp>`, `ln -sfn` + `mv -T` of `latest`, keep 5.
- **fresh release** (Deployer/Capistrano): `git archive main | tar -x` into a new
  `releases/<stamp>`, `composer install` there from scratch, the same symlink swap, keep 5.

All three run `composer {$m('composer_args')}`. For every app size, round after round, the same
new commit of each kind is pushed to atomdeploy, then the seed recipe, then the fresh release,
each server already holding the earlier deploys (warm `application/` and `vendor/`):
**content** (10 templates changed), **code** (10 classes in `src/` changed and one added),
**composer.lock** (the path package's version bumped and one of its classes changed, lock
rewritten by `composer update atomdeploy/lib`; the package is mirrored into `vendor/` again).

- **push → done**: wall time of `git push`.
- **push → live**: from just before `git push` to the moment `latest` points at the new build.
  atomdeploy: METHOD. The scripts write `date +%s.%N` right after their `mv -T`.
  atomdeploy's figure includes the `syncfs` it does before the rename (see *The switch alone*);
  the scripts do not flush.
- Every deploy is checked: the live build holds the pushed files and composer's class map.
- Before each push `sync` writes out what earlier pushes left in the page cache, as minutes
  between real pushes would; otherwise atomdeploy's `syncfs` would pay for the other servers'
  writes. `receive.autogc` is off on all three repositories.
- Medians of all rounds; ratios are median / median, above 1× meaning atomdeploy is faster.
MD;
$packages = (int) ($m('packages') ?: 0);
$md .= "\n" . ($packages === 0 ? <<<MD
- The app's one dependency comes from a local `path` repository (no network), so a from-scratch
  `composer install` costs the fresh release flow one local copy of it; with many packages from
  a registry it would unpack every one of them from composer's cache on every deploy.
MD : <<<MD
- `--packages $packages`: besides the changing package, the app requires $packages more from local
  `path` repositories (60 classes each, never changed), as a real app's dependencies: a
  from-scratch `composer install` copies every one of them on every deploy, an incremental one
  only what the lock changed.
MD) . "\n";
$md .= <<<MD

MD;
$methodText = isset($methods['switched_at'])
    ? '`switched_at` of its line in `.atomdeploy/deploys.jsonl` (taken right after the rename)'
    : '`started_at` of its line in `.atomdeploy/deploys.jsonl` plus the durations of the steps up to and including `switch`';
if (count($methods) > 1) {
    $methodText .= ' (where a line has no `switched_at`: `started_at` plus the steps up to and including `switch`)';
}
$md = str_replace('METHOD', $methodText, $md);

$md .= "\n## The apps\n\n";
$md .= "Files in the commit include the package in `packages/lib`, which composer mirrors into "
    . "`vendor/`, so a build holds more.\n\n";
$rows = [];
foreach ($sizes as $size) {
    $a = $apps[$size] ?? null;
    if ($a === null) {
        continue;
    }
    $rows[] = [num($a['files']), num($a['src']), num($a['tpl']), num($a['lib']), num($a['buildFiles']), kb((float) $a['buildKb'])];
}
$md .= table(['files in the commit', 'classes in src/', 'templates', 'classes in packages/lib', 'files in a build', 'size of a build'], $rows, [0, 1, 2, 3, 4, 5]);

foreach (['live' => 'push → live', 'done' => 'push → done'] as $key => $title) {
    $md .= "\n## $title (median of $rounds)\n\n";
    $rows = [];
    foreach ($sizes as $size) {
        foreach (KINDS as $kind => $kindLabel) {
            $med = [];
            foreach (FLOWS as $flow => $_) {
                $med[$flow] = median($col($by[$size][$kind][$flow] ?? [], $key));
            }
            $rows[] = [
                $label($size), $kindLabel,
                sec($med['atomdeploy']), sec($med['seed']), sec($med['fresh']),
                ratio($med['seed'], $med['atomdeploy']), ratio($med['fresh'], $med['atomdeploy']),
            ];
        }
    }
    $md .= table(['app', 'push', 'atomdeploy', 'seed recipe', 'fresh release', 'seed / atomdeploy', 'fresh / atomdeploy'], $rows, [2, 3, 4, 5, 6]);
}

$floor = [];
foreach ($floorFile !== '' && is_file($floorFile) ? rows($floorFile) : [] as [$size, $round, $secs]) {
    $floor[$size][] = (float) $secs;
}
if ($floor !== []) {
    $md .= "\n## A content push against the hard-link floor (median of $rounds)\n\n";
    $md .= "The floor: `cp -al` of atomdeploy's live build beside it, right after each round's content "
        . "push, with the same `sync` first: the least a flow that makes each build of hard links "
        . "can spend, with no checkout, no look at what changed and no flush. Ratio: atomdeploy's "
        . "time over the floor's, 1× being the floor.\n\n";
    $rows = [];
    foreach ($sizes as $size) {
        $rs = $by[$size]['content']['atomdeploy'] ?? [];
        $f = median($floor[$size] ?? []);
        $live = median($col($rs, 'live'));
        $hook = median($col($rs, 'hook'));
        $rows[] = [$label($size), sec($f), sec($live), ratio($live, $f), sec($hook), ratio($hook, $f)];
    }
    $md .= table(['app', 'floor: cp -al', 'push → live', 'live / floor', 'the hook', 'hook / floor'], $rows, [1, 2, 3, 4, 5]);
}

$md .= "\n## atomdeploy's steps (median of $rounds)\n\n";
$md .= "From its deploy log. `hook` is the whole hook; the rest of push → done is git's own work.\n\n";
$names = array_keys($stepNames);
$rows = [];
foreach ($sizes as $size) {
    foreach (KINDS as $kind => $kindLabel) {
        $rs = $by[$size][$kind]['atomdeploy'] ?? [];
        $row = [$label($size), $kindLabel];
        foreach ($names as $name) {
            $row[] = sec(median(array_map(fn ($r) => $r['steps'][$name] ?? null, $rs)));
        }
        $row[] = sec(median($col($rs, 'hook')));
        $rows[] = $row;
    }
}
$md .= table(array_merge(['app', 'push'], $names, ['hook']), $rows, range(2, count($names) + 2));

$md .= "\n## The switch alone (median of $rounds)\n\n";
$md .= "atomdeploy's `switch` step: `syncfs` of the build's filesystem (flush), the `rename(2)` of a "
    . "fresh symlink over `latest`, and an fsync of the deploy root. Flush and rename come from the "
    . "step's line in the push output, which rounds to 0.1 ms below 10 ms and to 10 ms above. "
    . "The scripts do not flush at all.\n\n";
$rows = [];
foreach ($sizes as $size) {
    foreach (KINDS as $kind => $kindLabel) {
        $rs = $by[$size][$kind]['atomdeploy'] ?? [];
        $rename = median($col($rs, 'rename'));
        $rows[] = [$label($size), $kindLabel, sec(median($col($rs, 'switch'))), sec(median($col($rs, 'flush'))),
            $rename !== null && $rename < 0.00005 ? '< 0.1 ms' : sec($rename)];
    }
}
$md .= table(['app', 'push', 'switch step', 'flush', 'rename'], $rows, [2, 3, 4]);

$md .= "\n## Peak memory of the atomdeploy hook\n\n";
$md .= "One extra push of each kind after the timed rounds, with `hooks/post-receive` replaced by a "
    . "wrapper. *Hook*: the hook process's own peak (`VmHWM`, polled every 20 ms). *Hook and "
    . "children*: `/usr/bin/time -f %M`, which reports the largest of the hook and the processes it "
    . "waited for — composer's PHP when that is bigger.\n\n";
$rows = [];
foreach (rows($memoryFile) as [$size, $kind, $hookKb, $treeKb]) {
    $rows[] = [$label($size), KINDS[$kind] ?? $kind, kb((float) $hookKb), kb((float) $treeKb)];
}
$md .= table(['app', 'push', 'hook', 'hook and children'], $rows, [2, 3]);

$md .= "\n## Disk\n\n";
$md .= "After the timed rounds (`du -sk`, one run per directory, so hard links count once). The seed "
    . "recipe and atomdeploy also keep a working copy, `application/`, with its `vendor/`.\n\n";
$disk = [];
foreach (rows($diskFile) as [$size, $flow, $what, $kbUsed, $entries]) {
    $disk[$size][$flow][$what] = [(float) $kbUsed, (int) $entries];
}
$rows = [];
foreach ($sizes as $size) {
    $row = [$label($size)];
    foreach (FLOWS as $flow => $_) {
        $cell = [];
        foreach ($disk[$size][$flow] ?? [] as $what => [$used, $entries]) {
            $cell[] = $what === 'application/'
                ? '+ ' . kb($used) . ' in application/'
                : kb($used) . " in $entries $what";
        }
        $row[] = $cell === [] ? 'n/a' : implode(' ', $cell);
    }
    $rows[] = $row;
}
$md .= table(['app', 'atomdeploy', 'seed recipe', 'fresh release'], $rows, [1, 2, 3]);

$md .= "\n## Cross-check of push → live\n\n";
$md .= "The modification time of the `latest` symlink (made just before its rename, in every flow) "
    . "gives push → live a second way. Largest difference from the figures above: ";
$parts = [];
foreach (FLOWS as $flow => $flowLabel) {
    if (isset($crossCheck[$flow])) {
        $parts[] = $flowLabel . ' ' . sec(max($crossCheck[$flow]));
    }
}
$md .= implode(', ', $parts) . ".\n";

$md .= "\n<details><summary>Every push (seconds)</summary>\n\n";
$rows = [];
foreach ($by as $size => $kinds) {
    foreach (KINDS as $kind => $kindLabel) {
        foreach ($kinds[$kind] ?? [] as $flow => $rs) {
            foreach ($rs as $r) {
                $rows[] = [$size, $kind, $r['round'], $flow, sprintf('%.3f', $r['live']), sprintf('%.3f', $r['done']),
                    $r['switch'] === '-' ? '' : sprintf('%.4f', (float) $r['switch'])];
            }
        }
    }
}
usort($rows, fn ($a, $b) => [$a[0], array_search($a[1], array_keys(KINDS)), $a[2], array_search($a[3], array_keys(FLOWS))]
    <=> [$b[0], array_search($b[1], array_keys(KINDS)), $b[2], array_search($b[3], array_keys(FLOWS))]);
$md .= table(['size', 'push', 'round', 'server', 'live', 'done', 'switch'], $rows, [4, 5, 6]);
$md .= "\n</details>\n";

echo $md;
