//! foobar-dns as a user runs it: the binary started as a process, asked by the real `dig`
//! over UDP and TCP, its health checks pointed at real HTTP servers on 127.0.0.x addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use foobar_service::testing::{self, RunningService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-dns");

/// Two balancers on their own loopback addresses, as in the stack's zone.
const LB1: &str = "127.0.0.11";
const LB2: &str = "127.0.0.12";

fn zone(extra: &str) -> String {
    // big: about 900 bytes, more than 512 and less than the 1232-byte UDP cap.
    // huge: about 1600 bytes, more than the cap whatever the client's buffer.
    let big_txt: String = (0..8)
        .map(|i| format!("big IN TXT \"{}\"\n", format!("{i:02}").repeat(50)))
        .collect();
    let huge_txt: String = (0..14)
        .map(|i| format!("huge IN TXT \"{}\"\n", format!("{i:02}").repeat(50)))
        .collect();
    format!(
        "$ORIGIN foobar.com.\n$TTL 300\n\
         @ IN SOA ns1.foobar.com. hostmaster.foobar.com. (\n  1 ; serial\n  3600 600 604800 60 )\n\
         @ IN NS ns1.foobar.com.\n\
         @ IN NS ns2.foobar.com.\n\
         @ IN MX 10 mail.foobar.com.\n\
         @ IN TXT \"v=spf1 -all\"\n\
         ns1 IN A 127.0.0.10\n\
         ns2 IN A 127.0.0.13\n\
         www IN A {LB1}\nwww IN A {LB2}\n\
         status IN CNAME alias\nalias IN CNAME www\n\
         mail IN A 127.0.0.25\n\
         v6 IN AAAA 2001:db8::1\n\
         {big_txt}{huge_txt}{extra}"
    )
}

/// A tiny HTTP server standing in for a balancer's admin port: 200 while `healthy`.
struct Balancer {
    healthy: Arc<AtomicBool>,
}

async fn balancer(ip: &str, port: u16) -> Balancer {
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .expect("bind a balancer stand-in");
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let status = if flag.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
        }
    });
    Balancer { healthy }
}

struct Fixture {
    dns: RunningService,
    addr: SocketAddr,
    zone_file: PathBuf,
    _dir: PathBuf,
}

async fn start(health_port: u16) -> Fixture {
    start_with_env(health_port, &[]).await
}

async fn start_with_env(health_port: u16, envs: &[(&str, &str)]) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "foobar-dns-test-{}-{health_port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let zone_file = dir.join("foobar.com.zone");
    std::fs::write(&zone_file, zone("")).unwrap();
    let config = dir.join("dns.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
             [dns]\nlisten = \"127.0.0.1:0\"\ntcp_idle_timeout = \"1s\"\n\n\
             [[zone]]\norigin = \"foobar.com\"\nfile = \"{}\"\n\n\
             [[health_check]]\nname = \"www.foobar.com\"\nport = {health_port}\npath = \"/readyz\"\n\
             interval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\nttl = \"5s\"\n",
            zone_file.display()
        ),
    )
    .unwrap();
    let dns = RunningService::start_ready(
        Path::new(BINARY),
        &config,
        envs,
        &["admin", "dns-udp", "dns-tcp"],
    )
    .await
    .unwrap();
    let addr = dns.addr("dns-udp");
    Fixture {
        dns,
        addr,
        zone_file,
        _dir: dir,
    }
}

/// What `dig` printed, in the parts tests look at.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    question: String,
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
    raw: String,
}

impl Dig {
    fn answer_data(&self, rtype: &str) -> Vec<String> {
        let mut data: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r[3] == rtype)
            .map(|r| r[4..].join(" "))
            .collect();
        data.sort();
        data
    }
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

async fn dig(addr: SocketAddr, args: &[&str]) -> Dig {
    let output = tokio::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args([
            "-p",
            &addr.port().to_string(),
            "+norecurse",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .await
        .expect("dig is installed by scripts/install-tools.sh");
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut dig = Dig {
        status: String::new(),
        flags: vec![],
        question: String::new(),
        answer: vec![],
        authority: vec![],
        additional: vec![],
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        } else if line.starts_with(";; QUESTION SECTION") {
            section = "question";
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(";;") || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            match section {
                "question" => dig.question = line.trim_start_matches(';').to_owned(),
                "answer" => dig.answer.push(fields),
                "authority" => dig.authority.push(fields),
                "additional" => dig.additional.push(fields),
                _ => {}
            }
        }
    }
    dig
}

/// Every answer kind, over UDP and over TCP.
#[tokio::test]
async fn answers_as_an_authoritative_server_over_udp_and_tcp() {
    let _lb1 = balancer(LB1, 18_001).await;
    let _lb2 = balancer(LB2, 18_001).await;
    let fx = start(18_001).await;
    for transport in ["+notcp", "+tcp"] {
        let www = dig(fx.addr, &[transport, "www.foobar.com", "A"]).await;
        assert_eq!(www.status, "NOERROR", "{}", www.raw);
        assert!(
            www.has_flag("aa"),
            "authoritative answers carry AA: {}",
            www.raw
        );
        assert_eq!(www.answer_data("A"), vec![LB1, LB2]);
        assert!(
            www.answer.iter().all(|r| r[1] == "5"),
            "health-checked answers have the short TTL: {}",
            www.raw
        );

        let missing = dig(fx.addr, &[transport, "nope.foobar.com", "A"]).await;
        assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
        assert!(missing.answer.is_empty());
        assert_eq!(
            missing.authority.first().map(|r| r[3].as_str()),
            Some("SOA"),
            "{}",
            missing.raw
        );

        let nodata = dig(fx.addr, &[transport, "www.foobar.com", "AAAA"]).await;
        assert_eq!(nodata.status, "NOERROR", "{}", nodata.raw);
        assert!(nodata.answer.is_empty(), "{}", nodata.raw);
        assert_eq!(
            nodata.authority.first().map(|r| r[3].as_str()),
            Some("SOA"),
            "{}",
            nodata.raw
        );

        let chain = dig(fx.addr, &[transport, "status.foobar.com", "A"]).await;
        assert_eq!(chain.status, "NOERROR", "{}", chain.raw);
        assert_eq!(
            chain.answer_data("CNAME"),
            vec!["alias.foobar.com.", "www.foobar.com."],
            "{}",
            chain.raw
        );
        assert_eq!(chain.answer_data("A"), vec![LB1, LB2], "{}", chain.raw);

        let mixed = dig(fx.addr, &[transport, "WwW.FooBar.CoM", "A"]).await;
        assert_eq!(mixed.answer_data("A"), vec![LB1, LB2], "{}", mixed.raw);
        assert!(
            mixed.question.contains("WwW.FooBar.CoM."),
            "the question comes back as asked: {}",
            mixed.raw
        );

        let outside = dig(fx.addr, &[transport, "example.org", "A"]).await;
        assert_eq!(outside.status, "REFUSED", "{}", outside.raw);

        for (rtype, expected) in [("MX", "10 mail.foobar.com."), ("TXT", "\"v=spf1 -all\"")] {
            let got = dig(fx.addr, &[transport, "foobar.com", rtype]).await;
            assert_eq!(got.answer_data(rtype), vec![expected], "{}", got.raw);
        }
        // Both name servers, and the address of each in the additional section (glue).
        for _ in 0..2 {
            let ns = dig(fx.addr, &[transport, "foobar.com", "NS"]).await;
            assert_eq!(
                ns.answer_data("NS"),
                vec!["ns1.foobar.com.", "ns2.foobar.com."],
                "{}",
                ns.raw
            );
            let mut glue = ns.additional.clone();
            glue.sort();
            assert_eq!(
                glue,
                vec![
                    vec!["ns1.foobar.com.", "300", "IN", "A", "127.0.0.10"],
                    vec!["ns2.foobar.com.", "300", "IN", "A", "127.0.0.13"],
                ],
                "{}",
                ns.raw
            );
        }
        let soa = dig(fx.addr, &[transport, "foobar.com", "SOA"]).await;
        assert!(
            soa.answer_data("SOA")[0].starts_with("ns1.foobar.com. hostmaster.foobar.com. 1 "),
            "{}",
            soa.raw
        );
        let v6 = dig(fx.addr, &[transport, "v6.foobar.com", "AAAA"]).await;
        assert_eq!(v6.answer_data("AAAA"), vec!["2001:db8::1"], "{}", v6.raw);

        let any = dig(fx.addr, &[transport, "foobar.com", "ANY"]).await;
        assert_eq!(any.status, "NOERROR", "{}", any.raw);
        assert_eq!(
            any.answer.len(),
            1,
            "RFC 8482: one record for ANY: {}",
            any.raw
        );
        assert_eq!(any.answer[0][3], "HINFO", "{}", any.raw);
    }
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A UDP answer larger than the client's buffer, or than `max_udp_payload` (1232), is
/// truncated (TC), and dig's retry over TCP gets all of it.
#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let fx = start(18_002).await;
    let truncated = dig(
        fx.addr,
        &["+notcp", "+ignore", "+bufsize=512", "big.foobar.com", "TXT"],
    )
    .await;
    assert!(truncated.has_flag("tc"), "{}", truncated.raw);
    let retried = dig(
        fx.addr,
        &["+notcp", "+bufsize=512", "big.foobar.com", "TXT"],
    )
    .await;
    assert_eq!(retried.answer_data("TXT").len(), 8, "{}", retried.raw);
    let no_edns = dig(
        fx.addr,
        &["+notcp", "+ignore", "+noedns", "big.foobar.com", "TXT"],
    )
    .await;
    assert!(
        no_edns.has_flag("tc"),
        "without EDNS the limit is 512: {}",
        no_edns.raw
    );
    let large_buffer = dig(
        fx.addr,
        &[
            "+notcp",
            "+ignore",
            "+bufsize=4096",
            "big.foobar.com",
            "TXT",
        ],
    )
    .await;
    assert!(!large_buffer.has_flag("tc"), "{}", large_buffer.raw);
    assert_eq!(large_buffer.answer_data("TXT").len(), 8);
    let capped = dig(
        fx.addr,
        &[
            "+notcp",
            "+ignore",
            "+bufsize=4096",
            "huge.foobar.com",
            "TXT",
        ],
    )
    .await;
    assert!(
        capped.has_flag("tc"),
        "capped at 1232 bytes whatever the client offers: {}",
        capped.raw
    );
    let over_tcp = dig(fx.addr, &["+tcp", "huge.foobar.com", "TXT"]).await;
    assert_eq!(over_tcp.answer_data("TXT").len(), 14, "{}", over_tcp.raw);
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A raw query for `name` `qtype` with, when `edns` is given, an OPT record of that buffer
/// size and DO bit.
fn raw_query(id: u16, name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0]);
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&1u16.to_be_bytes());
    if let Some((size, dnssec_ok)) = edns {
        query.extend_from_slice(&[0, 0, 41]);
        query.extend_from_slice(&size.to_be_bytes());
        query.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    query
}

async fn ask_udp(addr: SocketAddr, query: &[u8]) -> Vec<u8> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(addr).await.unwrap();
    socket.send(query).await.unwrap();
    let mut answer = vec![0u8; 65_535];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut answer))
        .await
        .expect("an answer within 2 s")
        .unwrap();
    answer.truncate(len);
    answer
}

/// RFC 2181 9: an answer that does not fit the client's UDP buffer (512 bytes without EDNS)
/// is the header and the question, plus the OPT record when the query had one, with TC set
/// and nothing else: no records, no bytes of a record cut half way. Asked twice, so both the
/// first answer and the cached one are checked; over TCP the whole answer comes.
#[tokio::test]
async fn truncated_answers_are_the_header_and_question_only() {
    let fx = start(18_007).await;
    const TXT: u16 = 16;
    let question_end = 12 + "big.foobar.com".len() + 2 + 4;
    for round in 0..2 {
        let answer = ask_udp(
            fx.addr,
            &raw_query(0x1234 + round, "big.foobar.com", TXT, None),
        )
        .await;
        assert_eq!(&answer[..2], &(0x1234 + round).to_be_bytes());
        assert_eq!(answer[2] & 0x82, 0x82, "QR and TC: {answer:?}");
        assert_eq!(
            &answer[4..12],
            &[0, 1, 0, 0, 0, 0, 0, 0],
            "one question, no records"
        );
        assert_eq!(
            answer.len(),
            question_end,
            "nothing after the question: {answer:?}"
        );

        let with_edns = raw_query(0x2345, "big.foobar.com", TXT, Some((512, true)));
        let answer = ask_udp(fx.addr, &with_edns).await;
        assert_eq!(answer[2] & 0x82, 0x82, "QR and TC: {answer:?}");
        assert_eq!(
            &answer[4..12],
            &[0, 1, 0, 0, 0, 0, 0, 1],
            "question and OPT only"
        );
        assert_eq!(answer.len(), question_end + 11, "{answer:?}");
        let opt = &answer[question_end..];
        assert_eq!(&opt[..3], &[0, 0, 41], "an OPT record: {opt:?}");
        assert_eq!(opt[7] & 0x80, 0x80, "with the query's DO bit: {opt:?}");

        let dig_no_edns = dig(
            fx.addr,
            &["+notcp", "+ignore", "+noedns", "big.foobar.com", "TXT"],
        )
        .await;
        assert!(dig_no_edns.has_flag("tc"), "{}", dig_no_edns.raw);
        assert!(dig_no_edns.answer.is_empty(), "{}", dig_no_edns.raw);
        assert!(
            !dig_no_edns.raw.contains("WARNING: Message has"),
            "no trailing bytes: {}",
            dig_no_edns.raw
        );
    }
    let over_tcp = dig(fx.addr, &["+tcp", "+noedns", "big.foobar.com", "TXT"]).await;
    assert!(!over_tcp.has_flag("tc"), "{}", over_tcp.raw);
    assert_eq!(over_tcp.answer_data("TXT").len(), 8, "{}", over_tcp.raw);
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// RFC 3225 3: the DO bit of a query's OPT record comes back in the answer's, whether the
/// answer is made by the catalog, the ANY synthesis, or taken from the cache; a query
/// without DO gets none.
#[tokio::test]
async fn the_do_bit_is_copied_into_the_answer() {
    let fx = start(18_008).await;
    for transport in ["+notcp", "+tcp"] {
        for (name, rtype) in [
            ("www.foobar.com", "A"),
            ("www.foobar.com", "A"),
            ("nope.foobar.com", "A"),
            ("foobar.com", "ANY"),
        ] {
            let with_do = dig(fx.addr, &[transport, "+dnssec", name, rtype]).await;
            assert!(
                with_do.raw.contains("; EDNS: version: 0, flags: do;"),
                "{}",
                with_do.raw
            );
            let without = dig(fx.addr, &[transport, name, rtype]).await;
            assert!(
                without.raw.contains("; EDNS: version: 0, flags:;"),
                "{}",
                without.raw
            );
        }
    }
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// Zone transfers: both servers of the stack read the same zone files, so none is a
/// secondary and foobar-dns refuses AXFR and IXFR alike (kdig, over TCP and UDP).
#[tokio::test]
async fn ixfr_is_refused_as_axfr_is() {
    let fx = start(18_009).await;
    let kdig = |args: Vec<String>| async move {
        let output = tokio::process::Command::new("kdig")
            .args(args)
            .output()
            .await
            .expect("kdig is installed by scripts/install-tools.sh");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let server = [
        format!("@{}", fx.addr.ip()),
        "-p".to_owned(),
        fx.addr.port().to_string(),
    ];
    for (transport, rtype) in [
        ("+tcp", "AXFR"),
        ("+tcp", "IXFR=0"),
        ("+notcp", "IXFR=0"),
        ("+tcp", "IXFR=1"),
    ] {
        let mut args = server.to_vec();
        args.extend([
            transport.to_owned(),
            "foobar.com".to_owned(),
            rtype.to_owned(),
        ]);
        let out = kdig(args).await;
        assert!(
            out.contains("server replied with error 'REFUSED'"),
            "{transport} {rtype}: {out}"
        );
    }
    const IXFR: u16 = 251;
    let answer = ask_udp(fx.addr, &raw_query(7, "foobar.com", IXFR, None)).await;
    assert_eq!(answer[3] & 0x0F, 5, "REFUSED: {answer:?}");
    assert_eq!(&answer[4..12], &[0, 1, 0, 0, 0, 0, 0, 0], "{answer:?}");
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// Only healthy balancers are answered; none healthy means all (fail open); a recovered one
/// comes back. Each change within interval x fall (+ timeout) of the balancer changing.
#[tokio::test]
async fn answers_follow_the_health_of_the_balancers() {
    let lb1 = balancer(LB1, 18_003).await;
    let lb2 = balancer(LB2, 18_003).await;
    let fx = start(18_003).await;
    let wait_for = |expected: Vec<&'static str>| async move {
        let started = Instant::now();
        loop {
            let got = dig(fx.addr, &["www.foobar.com", "A"])
                .await
                .answer_data("A");
            if got == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "still {got:?}, wanted {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(
        dig(fx.addr, &["www.foobar.com", "A"])
            .await
            .answer_data("A"),
        vec![LB1, LB2]
    );

    lb1.healthy.store(false, Ordering::SeqCst);
    let took = wait_for(vec![LB2]).await;
    assert!(
        took <= Duration::from_millis(1000),
        "interval 200ms x fall 2 (+ timeout): took {took:?}"
    );

    lb2.healthy.store(false, Ordering::SeqCst);
    wait_for(vec![LB1, LB2]).await; // nobody healthy: answer everybody

    lb1.healthy.store(true, Ordering::SeqCst);
    wait_for(vec![LB1]).await;
    lb2.healthy.store(true, Ordering::SeqCst);
    wait_for(vec![LB1, LB2]).await;

    let (_, metrics) = testing::http_get(fx.dns.addr("admin"), "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "foobar_dns_health_target_up{name=\"www.foobar.com.\",address=\"127.0.0.11\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("foobar_dns_queries_total{protocol=\"udp\",qtype=\"A\",rcode=\"NOERROR\"}"),
        "{metrics}"
    );
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// SIGHUP loads a changed zone; a broken one is refused with file and line, and the old zone
/// keeps answering.
#[tokio::test]
async fn sighup_reloads_good_zones_and_refuses_broken_ones() {
    let mut fx = start(18_004).await;
    assert_eq!(
        dig(fx.addr, &["new.foobar.com", "A"]).await.status,
        "NXDOMAIN"
    );

    std::fs::write(&fx.zone_file, zone("new IN A 127.0.0.99\n")).unwrap();
    fx.dns.signal("HUP").await.unwrap();
    fx.dns
        .wait_for_log("zone loaded", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        dig(fx.addr, &["new.foobar.com", "A"])
            .await
            .answer_data("A"),
        vec!["127.0.0.99"]
    );

    let broken = zone("new IN A 127.0.0.99\nbad IN A 300.1.2.3\n");
    let bad_line = broken.lines().count();
    std::fs::write(&fx.zone_file, broken).unwrap();
    fx.dns.signal("HUP").await.unwrap();
    let line = fx
        .dns
        .wait_for_log("zone reload refused", Duration::from_secs(5))
        .await
        .unwrap();
    let expected = format!("{}:{bad_line}:", fx.zone_file.display());
    assert!(
        line.contains(&expected),
        "the error names file and line {expected}: {line}"
    );
    assert_eq!(
        dig(fx.addr, &["new.foobar.com", "A"])
            .await
            .answer_data("A"),
        vec!["127.0.0.99"]
    );
    assert_eq!(
        dig(fx.addr, &["www.foobar.com", "A"]).await.status,
        "NOERROR"
    );
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// Garbage gets FORMERR or nothing, a silent TCP client is cut off, and the server goes on.
#[tokio::test]
async fn bad_input_never_stops_it() {
    let fx = start(18_005).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(fx.addr).await.unwrap();

    // A header announcing a question that is not there: FORMERR with the same ID.
    socket
        .send(&[0x42, 0x42, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w'])
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer[..2], &[0x42, 0x42]);
    assert_eq!(answer[3] & 0x0F, 1, "FORMERR");
    assert_eq!(len, 12);

    // Too short for a header: no answer at all.
    socket.send(&[1, 2, 3]).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut answer))
            .await
            .is_err()
    );

    // A length and then silence: disconnected after tcp_idle_timeout (1 s).
    let mut silent = tokio::net::TcpStream::connect(fx.dns.addr("dns-tcp"))
        .await
        .unwrap();
    silent.write_all(&[0, 40]).await.unwrap();
    let started = Instant::now();
    let mut rest = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "connection not closed: {closed:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    assert_eq!(
        dig(fx.addr, &["www.foobar.com", "A"]).await.status,
        "NOERROR"
    );
    assert_eq!(
        dig(fx.addr, &["+tcp", "www.foobar.com", "A"]).await.status,
        "NOERROR"
    );
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A query for `name`/A with message ID `id`, as it goes over TCP: with its length prefix.
fn tcp_query(id: u16, name: &str) -> Vec<u8> {
    let mut message = id.to_be_bytes().to_vec();
    message.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        message.push(u8::try_from(label.len()).unwrap());
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&message);
    framed
}

/// RFC 7766 6.2.1.1: queries pipelined on one connection, in one write or split anywhere
/// (here inside a length prefix and inside a message), are all answered, in order.
#[tokio::test]
async fn pipelined_tcp_queries_are_all_answered_in_order() {
    let fx = start(18_010).await;
    let mut stream = tokio::net::TcpStream::connect(fx.dns.addr("dns-tcp"))
        .await
        .unwrap();
    let mut queries: Vec<u8> = (0..300u16)
        .flat_map(|id| {
            tcp_query(
                id,
                if id % 2 == 0 {
                    "www.foobar.com"
                } else {
                    "nx.foobar.com"
                },
            )
        })
        .collect();
    let last = tcp_query(300, "www.foobar.com");
    queries.extend_from_slice(&last[..1]);
    stream.write_all(&queries).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&last[1..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&last[10..]).await.unwrap();

    for id in 0..=300u16 {
        let mut prefix = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut prefix))
            .await
            .unwrap_or_else(|_| panic!("no answer to query {id}"))
            .unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            u16::from_be_bytes([answer[0], answer[1]]),
            id,
            "answers in order"
        );
        let rcode = answer[3] & 0x0F;
        let expected = if id % 2 == 0 { 0 } else { 3 };
        assert_eq!(
            rcode, expected,
            "query {id}: NOERROR for www, NXDOMAIN for nx"
        );
    }
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A client that pipelines queries and never reads the answers fills its socket's buffers;
/// once its answers have waited for tcp_idle_timeout (1 s) it is disconnected, and the
/// server goes on answering others.
#[tokio::test]
async fn a_tcp_client_that_never_reads_its_answers_is_cut_off() {
    let fx = start(18_011).await;
    let mut stream = tokio::net::TcpStream::connect(fx.dns.addr("dns-tcp"))
        .await
        .unwrap();
    // About 1.6 KB per answer: 20 000 of them are far more than the sockets' buffers hold.
    let queries: Vec<u8> = (0..20_000u16)
        .flat_map(|id| tcp_query(id, "huge.foobar.com"))
        .collect();
    let (mut reader, mut writer) = stream.split();
    // The server stops reading when its writes stall, so this write may never finish.
    let _ = tokio::time::timeout(Duration::from_secs(3), writer.write_all(&queries)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut drained = 0usize;
    let mut buffer = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "still connected after {drained} bytes");
    assert!(
        drained < 20_000 * 1_600,
        "every answer arrived ({drained} bytes): the buffers never filled"
    );
    assert_eq!(
        dig(fx.addr, &["+tcp", "www.foobar.com", "A"]).await.status,
        "NOERROR"
    );
    fx.dns.terminate(Duration::from_secs(10)).await.unwrap();
}

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("foobar-dns-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zone_file = dir.join("z.zone");
    std::fs::write(&zone_file, zone("")).unwrap();
    let config = format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\n\n[[zone]]\norigin = \"foobar.com\"\nfile = \"{}\"\n",
        zone_file.display()
    );
    testing::assert_check_config(Path::new(BINARY), &config).unwrap();
}

/// `service.shutdown_delay` (shared by every service): after SIGTERM, /readyz fails at once,
/// but queries are still answered until the delay is over; then the process exits.
#[tokio::test]
async fn sigterm_with_a_shutdown_delay_keeps_answering_while_not_ready() {
    let mut fx = start_with_env(18_006, &[("FOOBAR_DNS_SERVICE__SHUTDOWN_DELAY", "2s")]).await;
    let admin = fx.dns.addr("admin");
    fx.dns.signal("TERM").await.unwrap();
    let signalled = Instant::now();
    fx.dns
        .wait_for_log(
            "still serving until the delay is over",
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let (status, _) = testing::http_get(admin, "/readyz").await.unwrap();
    assert_eq!(status, 503, "not ready as soon as the signal arrives");
    for transport in ["+notcp", "+tcp"] {
        let www = dig(fx.addr, &[transport, "www.foobar.com", "A"]).await;
        assert_eq!(www.status, "NOERROR", "still answering: {}", www.raw);
    }
    let status = fx.dns.wait(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "exited {took:?} after SIGTERM, before the 2 s delay was over"
    );
}
