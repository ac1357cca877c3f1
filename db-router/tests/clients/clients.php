<?php
// The client matrix's steps for PHP's drivers over mysqlnd (db-router/tests/clients.rs runs this).
//
// Usage: php clients.php DRIVER HOST PORT USER PASSWORD DATABASE PREFIX CSV
// DRIVER: mysqli (prepared statements, the blob sent with COM_STMT_SEND_LONG_DATA after a
// COM_STMT_RESET) or pdo
// (server-side prepares: PDO::ATTR_EMULATE_PREPARES off). Prints one line per step,
// `step<TAB>result[<TAB>detail]`, as clients.py does, and `kill-ready<TAB>ID` before the last
// step, then waits for a line on stdin while the test kills that connection.

ini_set('display_errors', 'stderr');
error_reporting(E_ALL);
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

[, $driver, $host, $port, $user, $password, $database, $prefix, $csv] = $argv;
$port = (int) $port;
$unicode = "h\u{e9}llo w\u{f6}rld \u{2713} \u{65e5}\u{672c} \u{1f42c}";
$blob = '';
for ($i = 0; $i < 100 * 1024; $i++) {
    $blob .= chr(($i * 31 + 7) % 256);
}
$jsonDoc = "{\"a\": [1, 2, {\"b\": \"\u{fc}\"}], \"n\": null}";

/** A connection of `$driver`; `$compress` and `$local` ask for compression, LOAD DATA LOCAL. */
function connect(bool $compress = false, bool $local = false)
{
    global $driver, $host, $port, $user, $password, $database;
    if ($driver === 'mysqli') {
        $db = mysqli_init();
        $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 10);
        $db->options(MYSQLI_OPT_READ_TIMEOUT, 20);
        if ($local) {
            // mysqli.allow_local_infile is off: allow the folder of the test's file only.
            global $csv;
            $db->options(MYSQLI_OPT_LOAD_DATA_LOCAL_DIR, dirname($csv));
        }
        $db->real_connect($host, $user, $password, $database, $port, null,
            $compress ? MYSQLI_CLIENT_COMPRESS : 0);
        $db->set_charset('utf8mb4');
        return $db;
    }
    $options = [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,
        PDO::ATTR_TIMEOUT => 10,
        PDO::MYSQL_ATTR_COMPRESS => $compress,
        PDO::MYSQL_ATTR_LOCAL_INFILE => $local,
    ];
    return new PDO("mysql:host=$host;port=$port;dbname=$database;charset=utf8mb4", $user,
        $password, $options);
}

/** The first row of `$sql` run as a prepared statement with `$params`. */
function one($db, string $sql, array $params = [])
{
    global $driver;
    if ($driver === 'mysqli') {
        $stmt = $db->prepare($sql);
        if ($params) {
            $stmt->bind_param(str_repeat('s', count($params)), ...$params);
        }
        $stmt->execute();
        $row = $stmt->get_result()->fetch_row();
        $stmt->close();
        return $row;
    }
    $stmt = $db->prepare($sql);
    $stmt->execute($params);
    $row = $stmt->fetch(PDO::FETCH_NUM);
    $stmt->closeCursor();
    return $row;
}

/** Runs `$sql` as a prepared statement, `$types` as mysqli's bind_param types. */
function run($db, string $sql, string $types = '', array $params = []): void
{
    global $driver;
    if ($driver === 'mysqli') {
        $stmt = $db->prepare($sql);
        if ($params) {
            $stmt->bind_param($types, ...$params);
        }
        $stmt->execute();
        $stmt->close();
        return;
    }
    $db->prepare($sql)->execute($params);
}

function begin($db): void
{
    global $driver;
    $driver === 'mysqli' ? $db->begin_transaction() : $db->beginTransaction();
}

$steps = [
    'setup' => function ($db) use ($prefix) {
        foreach (['rows', 'tx', 'batch', 'load'] as $table) {
            run($db, "DROP TABLE IF EXISTS {$prefix}_$table");
        }
        run($db, "CREATE TABLE {$prefix}_rows (id INT PRIMARY KEY, s VARCHAR(100), n INT,"
            . " b LONGBLOB, d DATETIME(6), j JSON) CHARSET utf8mb4");
        foreach (['tx', 'batch', 'load'] as $table) {
            run($db, "CREATE TABLE {$prefix}_$table (id INT PRIMARY KEY, n INT)");
        }
        return 'ok';
    },
    'params' => function ($db) use ($prefix, $unicode) {
        run($db, "INSERT INTO {$prefix}_rows (id, s, n) VALUES (?, ?, ?)", 'isi', [1, $unicode, null]);
        [$s, $n] = one($db, "SELECT s, n FROM {$prefix}_rows WHERE id = ?", [1]);
        return bin2hex($s) . ' ' . ($n === null ? 'NULL' : $n);
    },
    'blob' => function ($db) use ($prefix, $blob, $driver) {
        if ($driver === 'mysqli') {
            // COM_STMT_SEND_LONG_DATA, in 16 KB pieces, after a piece that COM_STMT_RESET
            // discards.
            $stmt = $db->prepare("INSERT INTO {$prefix}_rows (id, b) VALUES (2, ?)");
            $null = null;
            $stmt->bind_param('b', $null);
            $stmt->send_long_data(0, 'discarded by the reset');
            $stmt->reset();
            foreach (str_split($blob, 16 * 1024) as $piece) {
                $stmt->send_long_data(0, $piece);
            }
            $stmt->execute();
            $stmt->close();
        } else {
            $stmt = $db->prepare("INSERT INTO {$prefix}_rows (id, b) VALUES (2, ?)");
            $stmt->bindValue(1, $blob, PDO::PARAM_LOB);
            $stmt->execute();
        }
        [$b] = one($db, "SELECT b FROM {$prefix}_rows WHERE id = ?", [2]);
        return strlen($b) . ' ' . hash('sha256', $b);
    },
    'datetime' => function ($db) use ($prefix) {
        run($db, "INSERT INTO {$prefix}_rows (id, d) VALUES (?, ?)", 'is', [3, '2026-12-06 01:02:03.456789']);
        [$d] = one($db, "SELECT d FROM {$prefix}_rows WHERE id = ?", [3]);
        return $d;
    },
    'json' => function ($db) use ($prefix, $jsonDoc) {
        run($db, "INSERT INTO {$prefix}_rows (id, j) VALUES (?, ?)", 'is', [4, $jsonDoc]);
        [$j, $b] = one($db, "SELECT j, JSON_VALUE(j, '$.a[2].b') FROM {$prefix}_rows WHERE id = ?", [4]);
        return json_encode(json_decode($j)) . ' ' . bin2hex($b);
    },
    'transaction' => function ($db) use ($prefix) {
        begin($db);
        run($db, "INSERT INTO {$prefix}_tx VALUES (1, 1)");
        $db->rollback();
        begin($db);
        run($db, "INSERT INTO {$prefix}_tx VALUES (2, 2)");
        $db->commit();
        [$ids] = one($db, "SELECT GROUP_CONCAT(id ORDER BY id) FROM {$prefix}_tx");
        return $ids;
    },
    'batch' => function ($db) use ($prefix, $driver) {
        // One prepared statement executed 1000 times in one transaction.
        begin($db);
        $stmt = $db->prepare("INSERT INTO {$prefix}_batch (id, n) VALUES (?, ?)");
        for ($i = 1; $i <= 1000; $i++) {
            $n = $i * 3;
            if ($driver === 'mysqli') {
                $stmt->bind_param('ii', $i, $n);
                $stmt->execute();
            } else {
                $stmt->execute([$i, $n]);
            }
        }
        $db->commit();
        [$count, $sum] = one($db, "SELECT COUNT(*), SUM(n) FROM {$prefix}_batch");
        return "$count $sum";
    },
    'unbuffered' => function ($db) use ($prefix, $driver) {
        $count = $sum = 0;
        if ($driver === 'mysqli') {
            $result = $db->query("SELECT id, n FROM {$prefix}_batch ORDER BY id", MYSQLI_USE_RESULT);
            while ($row = $result->fetch_row()) {
                $count++;
                $sum += $row[1];
            }
            $result->free();
        } else {
            $db->setAttribute(PDO::MYSQL_ATTR_USE_BUFFERED_QUERY, false);
            $stmt = $db->prepare("SELECT id, n FROM {$prefix}_batch ORDER BY id");
            $stmt->execute();
            while ($row = $stmt->fetch(PDO::FETCH_NUM)) {
                $count++;
                $sum += $row[1];
            }
            $stmt->closeCursor();
            $db->setAttribute(PDO::MYSQL_ATTR_USE_BUFFERED_QUERY, true);
        }
        return "$count $sum";
    },
    'duplicate_key' => function ($db) use ($prefix) {
        try {
            run($db, "INSERT INTO {$prefix}_batch (id, n) VALUES (?, ?)", 'ii', [1, 0]);
            return 'no error';
        } catch (Exception $e) {
            $first = 'error ' . code($e);
        }
        [$one] = one($db, 'SELECT 1');
        return "$first then $one";
    },
    'compression' => function ($db) {
        $c = connect(compress: true);
        // 110 KB up and 140 KB back: frames both ways, deflated and split.
        $big = str_repeat('compressed ', 10000);
        [$length, $digest, $back] = one($c, 'SELECT LENGTH(?), MD5(?), REPEAT(?, 20000)', [$big, $big, 'foobar ']);
        return "$length $digest " . strlen($back);
    },
    'load_local' => function ($db) use ($prefix, $csv, $driver) {
        $c = connect(local: true);
        $sql = "LOAD DATA LOCAL INFILE '$csv' INTO TABLE {$prefix}_load FIELDS TERMINATED BY ','";
        // LOAD DATA cannot be prepared: a text query.
        $driver === 'mysqli' ? $c->query($sql) : $c->exec($sql);
        [$count, $sum] = one($c, "SELECT COUNT(*), SUM(n) FROM {$prefix}_load");
        return "$count $sum";
    },
    'killed' => function ($db) use ($prefix) {
        begin($db);
        [$id] = one($db, 'SELECT CONNECTION_ID()');
        echo "kill-ready\t$id\n";
        fflush(STDOUT);
        fgets(STDIN);
        one($db, "SELECT COUNT(*) FROM {$prefix}_batch");
        return 'no error';
    },
];

/** The server's (or the driver's) error number of a mysqli or PDO exception. */
function code(Exception $e)
{
    if ($e instanceof PDOException && isset($e->errorInfo[1])) {
        return $e->errorInfo[1];
    }
    return $e->getCode();
}

$db = null;
foreach ($steps as $name => $step) {
    try {
        $db ??= connect();
        echo "$name\t" . $step($db) . "\n";
    } catch (Exception $e) {
        echo "$name\terror " . code($e) . "\t" . preg_replace('/\s+/', ' ', $e->getMessage()) . "\n";
        $db = null;
    }
    fflush(STDOUT);
}
