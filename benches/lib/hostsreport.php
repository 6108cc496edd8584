<?php
// php hostsreport.php META RESULTS
// Turns what benches/hosts collects into its Markdown report (stdout).
//   META     key value
//   RESULTS  n flow round live done spread_ms reported_ms cpu own_ms reach_ms host_prepare_ms

declare(strict_types=1);

[, $metaFile, $resultsFile] = $argv + array_fill(0, 3, '');

require __DIR__ . '/markdown.php';

function ms(?float $ms): string
{
    return match (true) {
        $ms === null => 'n/a',
        $ms < 10 => sprintf('%.1f ms', $ms),
        $ms < 10000 => sprintf('%.0f ms', $ms),
        default => sprintf('%.1f s', $ms / 1000),
    };
}

[, $m] = meta($metaFile);

// $by[n][flow] = list of [live, done, spread_ms, reported_ms]
$by = [];
foreach (rows($resultsFile) as $row) {
    [$n, $flow, $round, $live, $done, $spread, $reported, $cpu, $own, $reach, $hostPrepare] = $row + array_fill(0, 11, '-');
    $by[(int) $n][$flow][] = [
        'live' => $live, 'done' => $done, 'spread' => $spread, 'reported' => $reported, 'cpu' => $cpu,
        'own' => $own, 'reach' => $reach, 'host_prepare' => $hostPrepare,
    ];
}
ksort($by);
$med = fn (int $n, string $flow, string $key) => median(array_column($by[$n][$flow] ?? [], $key));
$rounds = fewest_rounds($by, 2);
$has = fn (string $flow) => array_filter($by, fn ($flows) => isset($flows[$flow])) !== [];
$before = $m('before_label');

$others = array_filter([$has('before') ? "atomdeploy $before" : null, $has('capistrano') ? 'Capistrano' : null]);
$title = 'One push, several web servers: atomdeploy' . ($others === [] ? '' : ' against ' . implode(' and ', $others));
$md = report_head($title, $m, 'every server on it', array_values(array_filter([
    ['tools', sprintf('%s, git %s, PHP %s, Composer %s', $m('openssh'), $m('git'), $m('php'), $m('composer'))],
    ['atomdeploy-hook', sprintf('%s, commit %s', $m('atomdeploy'), $m('commit'))],
    ['ssh key exchange', sprintf('atomdeploy: %s; Capistrano: net-ssh\'s own', $m('kex'))],
    $has('before') ? ["atomdeploy-hook $before", $m('before')] : null,
    $has('capistrano') ? ['Capistrano', $m('capistrano')] : null,
    ['app', sprintf('%s files in the commit (benches/lib/genapp.php)', $m('files'))],
    ['rounds', sprintf('%d measured deploys per number of servers and tool', $rounds)],
])));

$md .= <<<MD

## What is measured

N web servers on one machine, each an `sshd` of its own on a loopback address (127.0.0.2,
127.0.0.3, …) with its own home, host key and `known_hosts` entry (host keys checked).

- **atomdeploy**: the developer pushes over ssh to web1, the primary, whose `deploy.yml` lists
  the others under `hosts:` (`hosts_at_once: N`); every server is an `atomdeploy-hook install`
  (`shared: [storage/]`), the primary reaching the others with a key restricted to `git-shell`.
  Each server prepares its build (incremental checkout, composer with a persistent `vendor/`,
  snapshot), then all switch together.
- **Capistrano**: the developer pushes to a plain bare repository (`repo_url`) and runs
  `cap production deploy` to web1..webN (Debian's capistrano; `git` SCM: mirror, `git archive`
  into a new release, `linked_dirs: [storage]`, `composer {$m('composer_args')}` in the release
  after `deploy:updated`, the `current` symlink, keep 5), over ssh with its own key.

- **atomdeploy $before** (when measured): the same as atomdeploy, on servers of its own, each
  installed with the other binary above.

Every round the same new commit (10 classes changed, one added) goes to each tool in turn, the
order rotating by one tool each round; every deploy is checked (each server's live `REVISION`,
the pushed files, composer's class map, the linked `storage`).

- **push → all live**: from just before `git push` to the last server's switch, the largest
  ctime (ns) of the servers' `latest` (atomdeploy) / `current` (Capistrano) symlinks, set by the
  switch's `rename(2)`.
- **push → done**: until `git push` (atomdeploy) / `git push` and `cap deploy` (Capistrano) exit.
- **switch spread**: the largest minus the smallest of those ctimes: how long the servers served
  different releases. A new inode's ctime comes from the kernel's coarse clock (one timer
  tick, 4 ms at `HZ=250`): that is the resolution of this figure. atomdeploy also reports its
  own (from the `CLOCK_REALTIME` taken right after each `rename(2)`), shown in brackets.
- **CPU**: the machine's busy CPU time (user, system, interrupts) from the push until it is
  done, every server's processes together, ssh, git and composer included; beside it, the
  share of the machine's {$m('nproc')} CPUs that was busy over push → done. A share near 100 %
  means the servers were waiting on each other's CPU, not on ssh or git transfers.
- Medians over the rounds; ratios are Capistrano / atomdeploy and $before / atomdeploy (above
  1×: atomdeploy faster).

## Results


MD;
// $flow's medians beside atomdeploy's: push → all live, push → done (each with the ratio) and
// the switch spread (atomdeploy's own figure in brackets).
$against = function (string $flow) use ($by, $med): array {
    $spread = fn (int $n, string $f) => ms($med($n, $f, 'spread'))
        . (($r = $med($n, $f, 'reported')) === null ? '' : ' (' . ms($r) . ')');
    $rows = [];
    foreach ($by as $n => $_) {
        $rows[] = [
            (string) $n,
            sec($med($n, 'atomdeploy', 'live')), sec($med($n, $flow, 'live')),
            ratio($med($n, $flow, 'live'), $med($n, 'atomdeploy', 'live')),
            sec($med($n, 'atomdeploy', 'done')), sec($med($n, $flow, 'done')),
            ratio($med($n, $flow, 'done'), $med($n, 'atomdeploy', 'done')),
            $spread($n, 'atomdeploy'), $spread($n, $flow),
        ];
    }
    return $rows;
};
if ($has('before')) {
    $md .= "### atomdeploy and atomdeploy $before\n\n" . table([
        'servers', 'atomdeploy push → all live', $before, 'ratio',
        'atomdeploy push → done', $before, 'ratio',
        'atomdeploy switch spread', $before,
    ], $against('before'), range(1, 8));
}
if ($has('capistrano')) {
    $md .= ($has('before') ? "\n" : '') . "### atomdeploy and Capistrano\n\n";
}
$rows = [];
foreach ($has('capistrano') ? $by : [] as $n => $_) {
    $aLive = $med($n, 'atomdeploy', 'live');
    $cLive = $med($n, 'capistrano', 'live');
    $aDone = $med($n, 'atomdeploy', 'done');
    $cDone = $med($n, 'capistrano', 'done');
    $aSpread = $med($n, 'atomdeploy', 'spread');
    $cSpread = $med($n, 'capistrano', 'spread');
    $reported = $med($n, 'atomdeploy', 'reported');
    $rows[] = [
        (string) $n,
        sec($aLive), sec($cLive), ratio($cLive, $aLive),
        sec($aDone), sec($cDone), ratio($cDone, $aDone),
        ms($aSpread) . ($reported === null ? '' : ' (' . ms($reported) . ')'),
        ms($cSpread), ratio($cSpread, $aSpread),
    ];
}
if ($rows !== []) {
    $md .= table([
        'servers', 'atomdeploy push → all live', 'Capistrano', 'ratio',
        'atomdeploy push → done', 'Capistrano', 'ratio',
        'atomdeploy switch spread', 'Capistrano', 'ratio',
    ], $rows, range(1, 9));
}

$cpus = max(1, (int) $m('nproc'));
$rows = [];
foreach ($by as $n => $flows) {
    foreach (array_keys($flows) as $flow) {
        $cpu = $med($n, $flow, 'cpu');
        $done = $med($n, $flow, 'done');
        if ($cpu === null || $done === null) {
            continue;
        }
        $rows[] = [
            (string) $n, $flow === 'before' ? "atomdeploy $before" : $flow, sprintf('%.2f s', $cpu),
            sec($done), sprintf('%.0f %%', 100 * $cpu / ($done * $cpus)),
        ];
    }
}
if ($rows !== []) {
    $md .= "\n### Where the time goes: CPU and waiting\n\n" . table(
        ['servers', 'tool', 'CPU, all servers', 'push → done', "busy share of {$cpus} CPUs"],
        $rows,
        [0, 2, 3, 4],
    );
}

$rows = [];
foreach ($by as $n => $flows) {
    foreach (array_keys($flows) as $flow) {
        $reach = $med($n, $flow, 'reach');
        if ($reach === null || $flow === 'capistrano') {
            continue;
        }
        $rows[] = [
            (string) $n, $flow === 'before' ? "atomdeploy $before" : $flow, ms($med($n, $flow, 'own')),
            ms($reach), ms($med($n, $flow, 'host_prepare')), sec($med($n, $flow, 'live')),
        ];
    }
}
if ($rows !== []) {
    $md .= "\n### Where the time goes: reaching the hosts\n\n"
        . "From the deploy logs (medians): the primary's own prepare (its steps before the switch); how long after the "
        . "primary's hook started the last host's hook started (ssh's connection, git's transfer and the host's start: "
        . "waiting on the network or on the CPU); the longest host prepare (its hook's own time).\n\n"
        . table(
            ['servers', 'tool', "primary's own prepare", 'last host started after', 'longest host prepare', 'push → all live'],
            $rows,
            [0, 2, 3, 4, 5],
        );
}

$md .= "\n## Every deploy\n\n";
$rows = [];
foreach ($by as $n => $flows) {
    foreach ($flows as $flow => $rs) {
        foreach ($rs as $i => $r) {
            $rows[] = [
                (string) $n, $flow === 'before' ? "atomdeploy $before" : $flow, (string) ($i + 1), sec((float) $r['live']), sec((float) $r['done']),
                ms((float) $r['spread']), $r['reported'] === '-' ? '' : ms((float) $r['reported']),
                $r['cpu'] === '-' ? '' : sprintf('%.2f s', (float) $r['cpu']),
            ];
        }
    }
}
$md .= table(['servers', 'tool', 'round', 'push → all live', 'push → done', 'switch spread', 'reported', 'CPU'], $rows, [0, 2, 3, 4, 5, 6, 7]);
echo $md;
