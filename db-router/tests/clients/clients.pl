# The client matrix's steps for Perl's DBD::MariaDB (MariaDB Connector/C underneath) with
# server-side prepares (db-router/tests/clients.rs runs this).
#
# Usage: perl clients.pl HOST PORT USER PASSWORD DATABASE PREFIX CSV
# Prints one line per step, `step<TAB>result[<TAB>detail]`, as clients.py does, and
# `kill-ready<TAB>ID` before the last step, then waits for a line on stdin while the test
# kills that connection.
use strict;
use warnings;
use utf8;
use DBI qw(:sql_types);
use Digest::SHA qw(sha256_hex);
use Encode qw(encode_utf8);

my ($host, $port, $user, $password, $database, $prefix, $csv) = @ARGV;
$| = 1;
my $unicode = "h\x{e9}llo w\x{f6}rld \x{2713} \x{65e5}\x{672c} \x{1f42c}";
my $blob = join '', map { chr(($_ * 31 + 7) % 256) } 0 .. 100 * 1024 - 1;
my $json_doc = "{\"a\": [1, 2, {\"b\": \"\x{fc}\"}], \"n\": null}";

# A connection; `extra` adds DSN attributes (compression, LOAD DATA LOCAL).
sub connect_db {
    my ($extra) = @_;
    $extra //= '';
    return DBI->connect(
        "DBI:MariaDB:database=$database;host=$host;port=$port;mariadb_connect_timeout=10;"
          . "mariadb_read_timeout=20$extra",
        $user, $password,
        { RaiseError => 1, PrintError => 0, AutoCommit => 1, mariadb_server_prepare => 1 });
}

sub one {
    my ($db, $sql, @params) = @_;
    return $db->selectrow_array($sql, undef, @params);
}

sub run {
    my ($db, $sql, @params) = @_;
    $db->do($sql, undef, @params);
}

my @steps = (
    [setup => sub {
        my ($db) = @_;
        run($db, "DROP TABLE IF EXISTS ${prefix}_$_") for qw(rows tx batch load);
        run($db, "CREATE TABLE ${prefix}_rows (id INT PRIMARY KEY, s VARCHAR(100), n INT,"
              . " b LONGBLOB, d DATETIME(6), j JSON) CHARSET utf8mb4");
        run($db, "CREATE TABLE ${prefix}_$_ (id INT PRIMARY KEY, n INT)") for qw(tx batch load);
        return 'ok';
    }],
    [params => sub {
        my ($db) = @_;
        run($db, "INSERT INTO ${prefix}_rows (id, s, n) VALUES (?, ?, ?)", 1, $unicode, undef);
        my ($s, $n) = one($db, "SELECT s, n FROM ${prefix}_rows WHERE id = ?", 1);
        return unpack('H*', encode_utf8($s)) . ' ' . ($n // 'NULL');
    }],
    [blob => sub {
        my ($db) = @_;
        my $stmt = $db->prepare("INSERT INTO ${prefix}_rows (id, b) VALUES (2, ?)");
        $stmt->bind_param(1, $blob, SQL_BLOB);
        $stmt->execute;
        my ($b) = one($db, "SELECT b FROM ${prefix}_rows WHERE id = ?", 2);
        return length($b) . ' ' . sha256_hex($b);
    }],
    [datetime => sub {
        my ($db) = @_;
        run($db, "INSERT INTO ${prefix}_rows (id, d) VALUES (?, ?)", 3, '2026-12-06 01:02:03.456789');
        my ($d) = one($db, "SELECT d FROM ${prefix}_rows WHERE id = ?", 3);
        return $d;
    }],
    [json => sub {
        my ($db) = @_;
        run($db, "INSERT INTO ${prefix}_rows (id, j) VALUES (?, ?)", 4, $json_doc);
        my ($j, $b) = one($db,
            "SELECT JSON_COMPACT(j), JSON_VALUE(j, '\$.a[2].b') FROM ${prefix}_rows WHERE id = ?", 4);
        return unpack('H*', encode_utf8($j)) . ' ' . unpack('H*', encode_utf8($b));
    }],
    [transaction => sub {
        my ($db) = @_;
        $db->begin_work;
        run($db, "INSERT INTO ${prefix}_tx VALUES (1, 1)");
        $db->rollback;
        $db->begin_work;
        run($db, "INSERT INTO ${prefix}_tx VALUES (2, 2)");
        $db->commit;
        my ($ids) = one($db, "SELECT GROUP_CONCAT(id ORDER BY id) FROM ${prefix}_tx");
        return $ids;
    }],
    [batch => sub {
        my ($db) = @_;
        # One prepared statement executed 1000 times in one transaction.
        $db->begin_work;
        my $stmt = $db->prepare("INSERT INTO ${prefix}_batch (id, n) VALUES (?, ?)");
        $stmt->execute($_, $_ * 3) for 1 .. 1000;
        $db->commit;
        return join ' ', one($db, "SELECT COUNT(*), SUM(n) FROM ${prefix}_batch");
    }],
    [unbuffered => sub {
        my ($db) = @_;
        # DBD::MariaDB 1.22 (Debian bookworm's) reads no row with mariadb_use_result and leaves
        # the connection out of sync (its issue 173, fixed in 1.23).
        return "n/a (DBD::MariaDB $DBD::MariaDB::VERSION: mariadb_use_result reads no row)"
          if $DBD::MariaDB::VERSION < 1.23;
        my $stmt = $db->prepare("SELECT id, n FROM ${prefix}_batch ORDER BY id",
            { mariadb_use_result => 1 });
        $stmt->execute;
        my ($count, $sum) = (0, 0);
        while (my $row = $stmt->fetchrow_arrayref) {
            $count++;
            $sum += $row->[1];
        }
        return "$count $sum";
    }],
    [duplicate_key => sub {
        my ($db) = @_;
        my $first = eval {
            run($db, "INSERT INTO ${prefix}_batch (id, n) VALUES (?, ?)", 1, 0);
            'no error';
        } // 'error ' . $db->err;
        my ($one) = one($db, 'SELECT 1');
        return "$first then $one";
    }],
    [compression => sub {
        my $c = connect_db(';mariadb_compression=1');
        # 110 KB up and 140 KB back: frames both ways, deflated and split.
        my $big = 'compressed ' x 10000;
        my ($length, $digest, $back) =
            one($c, 'SELECT LENGTH(?), MD5(?), REPEAT(?, 20000)', $big, $big, 'foobar ');
        return "$length $digest " . length($back);
    }],
    [load_local => sub {
        my $c = connect_db(';mariadb_local_infile=1');
        # LOAD DATA cannot be prepared: a text query.
        $c->do("LOAD DATA LOCAL INFILE '$csv' INTO TABLE ${prefix}_load FIELDS TERMINATED BY ','",
            { mariadb_server_prepare => 0 });
        return join ' ', one($c, "SELECT COUNT(*), SUM(n) FROM ${prefix}_load");
    }],
    [killed => sub {
        my ($db) = @_;
        $db->begin_work;
        my ($id) = one($db, 'SELECT CONNECTION_ID()');
        print "kill-ready\t$id\n";
        <STDIN>;
        one($db, "SELECT COUNT(*) FROM ${prefix}_batch");
        return 'no error';
    }],
);

my $db;
for my $step (@steps) {
    my ($name, $code) = @$step;
    my $result = eval {
        $db //= connect_db();
        $code->($db);
    };
    if (defined $result) {
        print "$name\t$result\n";
    } else {
        my $err = $DBI::err // '?';
        (my $message = $DBI::errstr // $@) =~ s/\s+/ /g;
        print "$name\terror $err\t", encode_utf8($message), "\n";
        $db = undef;
    }
}
