<?php
// php deploylog.php DEPLOYS_JSONL COMMIT PUSH_START PUSH_OUTPUT
// Reads atomdeploy's log line for the deploy of COMMIT and prints, tab-separated:
//   live     seconds from PUSH_START (epoch seconds, the bench's clock) to the switch:
//            `switched_at` when the log has it, else started_at + the steps up to and
//            including "switch"
//   switch   the "switch" step's seconds
//   flush    the flush part of the switch, from the hook's output (PUSH_OUTPUT), or "-"
//   rename   the rename part, likewise
//   hook     the hook's total seconds (`seconds`)
//   method   "switched_at" or "steps", whichever gave `live`
//   steps    step=seconds,step=seconds,... in order
// Exits 1 when there is no such line or its outcome is not "deployed".

declare(strict_types=1);

[, $log, $commit, $pushStart, $output] = $argv + [null, '', '', '', ''];

require __DIR__ . '/deploys.php';

/** "3.3ms", "0.16s", "12µs" as seconds */
function duration(string $value, string $unit): float
{
    return (float) $value * match ($unit) { 's' => 1.0, 'ms' => 1e-3, 'µs', 'us' => 1e-6, 'ns' => 1e-9 };
}

$entry = last_entry($log, fn (array $e) => ($e['commit'] ?? '') === $commit);
if ($entry === null) {
    fwrite(STDERR, "no deploy of $commit in $log\n");
    exit(1);
}
if (($entry['outcome'] ?? '') !== 'deployed') {
    fwrite(STDERR, "the deploy of $commit ended " . json_encode($entry['outcome'] ?? null)
        . ': ' . json_encode($entry['error'] ?? null) . "\n");
    exit(1);
}

$upToSwitch = 0.0;
$switch = null;
$steps = [];
foreach ($entry['steps'] as $s) {
    $steps[] = $s['step'] . '=' . sprintf('%.6f', $s['seconds']);
    if ($switch === null) {
        $upToSwitch += $s['seconds'];
    }
    if ($s['step'] === 'switch') {
        $switch = (float) $s['seconds'];
    }
}
if ($switch === null) {
    fwrite(STDERR, "the deploy of $commit has no switch step\n");
    exit(1);
}
if (!empty($entry['switched_at'])) {
    [$liveAt, $method] = [epoch($entry['switched_at']), 'switched_at'];
} else {
    [$liveAt, $method] = [epoch($entry['started_at']) + $upToSwitch, 'steps'];
}

$flush = $rename = '-';
$text = is_file($output) ? (string) file_get_contents($output) : '';
if (preg_match_all('/switch [^\n]*\(flush ([\d.]+)(s|ms|µs|us)[^\n]*?rename (?:took )?([\d.]+)(s|ms|µs|us)/u', $text, $m, PREG_SET_ORDER)) {
    $last = end($m);
    $flush = sprintf('%.6f', duration($last[1], $last[2]));
    $rename = sprintf('%.6f', duration($last[3], $last[4]));
}

printf(
    "%.6f\t%.6f\t%s\t%s\t%.6f\t%s\t%s\n",
    $liveAt - (float) $pushStart,
    $switch,
    $flush,
    $rename,
    $entry['seconds'],
    $method,
    implode(',', $steps)
);
