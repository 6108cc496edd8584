<?php
// The helpers both benchmark reports share: tab-separated input files, medians, ratios,
// human-readable seconds and sizes, Markdown tables.

declare(strict_types=1);

function rows(string $file): array
{
    $rows = [];
    foreach (file($file, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: [] as $line) {
        $rows[] = explode("\t", $line);
    }
    return $rows;
}

function median(array $xs): ?float
{
    $xs = array_values(array_filter($xs, fn ($x) => $x !== null && $x !== '-' && $x !== ''));
    if ($xs === []) {
        return null;
    }
    $xs = array_map('floatval', $xs);
    sort($xs);
    $n = count($xs);
    return $n % 2 ? $xs[intdiv($n, 2)] : ($xs[$n / 2 - 1] + $xs[$n / 2]) / 2;
}

function sec(?float $s): string
{
    return match (true) {
        $s === null => 'n/a',
        abs($s) < 0.01 => sprintf('%.1f ms', $s * 1000),
        abs($s) < 1 => sprintf('%.0f ms', $s * 1000),
        abs($s) < 100 => sprintf('%.2f s', $s),
        default => sprintf('%.0f s', $s),
    };
}

function ratio(?float $a, ?float $b): string
{
    return ($a === null || $b === null || $b <= 0) ? 'n/a' : sprintf('%.1f×', $a / $b);
}

function kb(float $kb): string
{
    return match (true) {
        $kb >= 1048576 => sprintf('%.2f GiB', $kb / 1048576),
        $kb >= 1024 => sprintf('%.0f MiB', $kb / 1024),
        default => sprintf('%d KiB', (int) $kb),
    };
}

function num(int|string $n): string
{
    return number_format((int) $n);
}

function table(array $header, array $rows, array $right = []): string
{
    $out = '| ' . implode(' | ', $header) . " |\n|";
    foreach ($header as $i => $_) {
        $out .= in_array($i, $right, true) ? '---:|' : '---|';
    }
    $out .= "\n";
    foreach ($rows as $row) {
        $out .= '| ' . implode(' | ', $row) . " |\n";
    }
    return $out;
}
