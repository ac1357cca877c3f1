//! The whole stack, started from the repository's docker-compose.yml and the images `make
//! images` built, tested the way a visitor and an attacker on the outside would: published
//! ports, the firewall between the networks, DNS answers that follow the balancers' health
//! from both DNS servers, one DNS server killed or frozen without a failed lookup,
//! round robin, read-your-writes through the whole chain, a rolling deploy under load, and
//! the failover demo's kills, each asserted. One stack serves every check (starting one takes a minute or two), so this
//! is one test that runs the checks in order and reports each; a failed check does not stop
//! the others, but fails the test.

mod stack_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use foobar_demo::account::Targets;
use foobar_demo::faults::Fault;
use foobar_demo::load::{Load, LoadConfig};
use foobar_demo::{Config, Scenario};
use stack_support::{Stack, parse_probes, probe_script, progress};

/// The services that may publish ports, and only on the host's loopback.
const PUBLISHERS: [&str; 4] = ["dns-1", "dns-2", "lb-1", "lb-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack() {
    let stack = Stack::up()
        .await
        .expect("the stack starts and gets healthy");
    let mut failures = Vec::new();
    check(
        &mut failures,
        "only the DNS servers and the balancers publish ports, on 127.0.0.1",
        only_the_edge_publishes(&stack),
    )
    .await;
    check(
        &mut failures,
        "the firewall between edge, app and data holds",
        the_firewall_holds(&stack),
    )
    .await;
    check(
        &mut failures,
        "a visitor's client container gets the site through DNS",
        a_visitor_gets_the_site(&stack),
    )
    .await;
    check(
        &mut failures,
        "the status page, through the balancers, shows the stack",
        the_status_page_shows_the_stack(&stack),
    )
    .await;
    check(
        &mut failures,
        "100 requests split evenly between web-a and web-b",
        requests_split_evenly(&stack),
    )
    .await;
    check(
        &mut failures,
        "a post written through the site is on the next page view",
        read_your_writes_through_the_chain(&stack),
    )
    .await;
    check(
        &mut failures,
        "the DNS answer is the healthy balancers",
        dns_answers_the_healthy_balancers(&stack),
    )
    .await;
    check(
        &mut failures,
        "one DNS server killed or frozen fails no lookup",
        a_dns_server_down_fails_no_lookup(&stack),
    )
    .await;
    check(
        &mut failures,
        "admin actions only from the host's loopback, with the token",
        admin_actions_only_for_operators(&stack),
    )
    .await;
    check(
        &mut failures,
        "a rolling deploy under load fails no request",
        a_rolling_deploy_fails_nothing(&stack),
    )
    .await;
    check(
        &mut failures,
        "every fault of the failover demo: kill, pause, partition, partial",
        the_demo_faults(&stack),
    )
    .await;
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}

async fn check(
    failures: &mut Vec<String>,
    name: &str,
    body: impl Future<Output = anyhow::Result<()>>,
) {
    foobar_stack_tests::check(failures, progress, name, body).await;
}

async fn only_the_edge_publishes(stack: &Stack) -> anyhow::Result<()> {
    let containers = stack.ps().await?;
    ensure!(
        containers.len() >= 11,
        "only {} containers",
        containers.len()
    );
    for container in &containers {
        let service = &container.state.service;
        let published: Vec<_> = container
            .publishers
            .iter()
            .flatten()
            .filter(|p| p.published_port != 0)
            .collect();
        if PUBLISHERS.contains(&service.as_str()) {
            ensure!(!published.is_empty(), "{service} publishes nothing");
        } else {
            ensure!(
                published.is_empty(),
                "{service} publishes {:?}",
                published
                    .iter()
                    .map(|p| format!("{}:{}", p.url, p.published_port))
                    .collect::<Vec<_>>()
            );
        }
        for port in published {
            ensure!(
                port.url == "127.0.0.1",
                "{service} publishes {}/{} on {}, not only on 127.0.0.1",
                port.target_port,
                port.protocol,
                port.url
            );
        }
    }
    Ok(())
}

/// From the outside (`edge`, where the client container is), no web server, router, database
/// or Prometheus answers; from inside a balancer, no router or database does. A port that
/// must be open from the same place is probed with them, so a probe that cannot connect at
/// all fails the check instead of passing it.
async fn the_firewall_holds(stack: &Stack) -> anyhow::Result<()> {
    let mut inner = Vec::new();
    for (service, port) in [
        ("db-primary", 3306),
        ("db-replica", 3306),
        ("router-a", 3306),
        ("router-b", 3306),
        ("router-a", 9306),
        ("web-a", 8080),
        ("web-b", 8080),
        ("prometheus", 9090),
    ] {
        for address in stack.addresses(service).await? {
            inner.push((service, address, port));
        }
    }
    let lb1 = Stack::edge_address(11);

    // The outside: a visitor's container on `edge`.
    let mut targets: Vec<(IpAddr, u16)> = inner.iter().map(|(_, a, p)| (*a, *p)).collect();
    targets.push((lb1, 443));
    let probes = parse_probes(&stack.client(&probe_script(&targets)).await?)?;
    expect_open(&probes, &format!("{lb1}:443"), "the client container")?;
    for (service, address, port) in &inner {
        expect_closed(&probes, &format!("{address}:{port}"), service, "edge")?;
    }

    // A balancer: it reaches the web servers, and no database port.
    let mut targets = Vec::new();
    let mut databases = Vec::new();
    for (service, address, port) in &inner {
        if *port == 3306 {
            targets.push((*address, *port));
            databases.push((*service, *address, *port));
        }
    }
    let web_a = stack.addresses("web-a").await?;
    targets.extend(web_a.iter().map(|a| (*a, 8080)));
    let probes = parse_probes(&stack.run_inside("lb-1", &probe_script(&targets)).await?)?;
    ensure!(
        web_a
            .iter()
            .any(|a| probes.contains(&(format!("{a}:8080"), true))),
        "lb-1 cannot reach web-a:8080 either, so the probe proves nothing: {probes:?}"
    );
    for (service, address, port) in &databases {
        expect_closed(&probes, &format!("{address}:{port}"), service, "lb-1")?;
    }
    Ok(())
}

fn expect_open(probes: &[(String, bool)], target: &str, from: &str) -> anyhow::Result<()> {
    ensure!(
        probes.contains(&(target.to_owned(), true)),
        "{from} cannot reach {target}, which it must: {probes:?}"
    );
    Ok(())
}

fn expect_closed(
    probes: &[(String, bool)],
    target: &str,
    service: &str,
    from: &str,
) -> anyhow::Result<()> {
    ensure!(
        probes.contains(&(target.to_owned(), false)),
        "{service} at {target} is reachable from {from}: {probes:?}"
    );
    Ok(())
}

/// `docker compose run --rm client curl -s https://www.foobar.com/`, as the README says: the
/// client's resolvers are dns-1 and dns-2, its CA the balancers'. Plain HTTP redirects to
/// HTTPS.
async fn a_visitor_gets_the_site(stack: &Stack) -> anyhow::Result<()> {
    let out = stack
        .client(
            "dig +short www.foobar.com | sort; \
             curl -s -o /dev/null -w 'https %{http_code} %{http_version}\\n' https://www.foobar.com/; \
             curl -s -o /dev/null -w 'http %{http_code} %{redirect_url}\\n' http://www.foobar.com/guestbook; \
             grep '^nameserver' /etc/resolv.conf",
        )
        .await?;
    let lines: Vec<&str> = out.lines().collect();
    let balancers = [Stack::edge_address(11), Stack::edge_address(12)].map(|a| a.to_string());
    let resolvers =
        [Stack::edge_address(10), Stack::edge_address(13)].map(|a| format!("nameserver {a}"));
    ensure!(
        lines.len() == 6 && lines[4..] == resolvers,
        "the client container's resolvers are {:?}, not {resolvers:?}",
        lines.get(4..)
    );
    ensure!(
        lines[..2] == balancers,
        "dig www.foobar.com in the client container answered {:?}, not {balancers:?}",
        &lines[..lines.len().min(2)]
    );
    ensure!(
        lines[2] == "https 200 2",
        "curl https://www.foobar.com/: {}",
        lines[2]
    );
    ensure!(
        lines[3] == "http 308 https://www.foobar.com/guestbook",
        "curl http://www.foobar.com/guestbook: {}",
        lines[3]
    );
    Ok(())
}

/// https://status.foobar.com/consoles/stack.html from the client container: Prometheus's
/// console, served through a balancer (Prometheus publishes no port), refused without the
/// login (as its APIs are) and with it showing live data: every
/// service UP, both balancers in foobar-dns's answer, each router's view of both databases.
/// Prometheus scrapes every 2 s; the page may need a few scrapes after the start.
async fn the_status_page_shows_the_stack(stack: &Stack) -> anyhow::Result<()> {
    let wanted: Vec<String> = [
        "<td>dns-1</td>",
        "<td>dns-2</td>",
        "<td>lb-1</td>",
        "<td>web-b</td>",
        "<td>router-a</td>",
        "db-replica:3306",
    ]
    .into_iter()
    .map(String::from)
    .chain([11, 12].map(|host| format!("<td>{}</td>", Stack::edge_address(host))))
    .collect();
    let login = prometheus_login(stack)?;
    let started = Instant::now();
    loop {
        let page = stack
            .client(&format!(
                "curl -s -u '{login}' https://status.foobar.com/consoles/stack.html"
            ))
            .await?;
        let missing: Vec<&String> = wanted.iter().filter(|w| !page.contains(*w)).collect();
        let down = page.contains(">DOWN<");
        if missing.is_empty() && !down {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("after 30 s the status page lacks {missing:?} (a DOWN on it: {down}):\n{page}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The site is up (the page came). Without the login: 401, the APIs that list every
    // internal address too.
    let refused = stack
        .client(
            "for p in /consoles/stack.html /api/v1/targets '/api/v1/query?query=up' \
               /api/v1/status/config; do \
               curl -gs -o /dev/null -w '%{http_code} ' \"https://status.foobar.com$p\"; done",
        )
        .await?;
    ensure!(
        refused.trim() == "401 401 401 401",
        "status.foobar.com without a login answered {refused}, not 401 each"
    );
    Ok(())
}

/// `operator:PASSWORD`, status.foobar.com's login (scripts/secrets.sh).
fn prometheus_login(stack: &Stack) -> anyhow::Result<String> {
    let password = std::fs::read_to_string(stack.repo.join("secrets/prometheus_password"))
        .context("secrets/prometheus_password")?;
    Ok(format!("operator:{}", password.trim()))
}

/// One curl, 100 requests on one connection through one balancer: round robin alternates.
async fn requests_split_evenly(stack: &Stack) -> anyhow::Result<()> {
    let out = stack
        .client(
            "curl -s -w '%header{x-served-by}\\n' $(for i in $(seq 100); do \
             printf -- '-o /dev/null https://www.foobar.com/?n=%s ' $i; done)",
        )
        .await?;
    let mut served: BTreeMap<&str, u32> = BTreeMap::new();
    for line in out.lines() {
        *served.entry(line.trim()).or_default() += 1;
    }
    let a = served.get("web-a").copied().unwrap_or(0);
    let b = served.get("web-b").copied().unwrap_or(0);
    ensure!(
        a + b == 100 && a.abs_diff(b) <= 2,
        "100 requests were served as {served:?}"
    );
    progress(&format!("web-a {a}, web-b {b}"));
    Ok(())
}

/// A post through the HTML form, then the page the form redirects to: the post is on it,
/// whichever web server, router and database node each request reaches. Ten times, each
/// request on a connection of its own, so the write and the read go through different web
/// servers and routers (round robin).
async fn read_your_writes_through_the_chain(stack: &Stack) -> anyhow::Result<()> {
    let out = stack
        .client(
            "for i in $(seq 10); do \
               marker=ryw-$RANDOM-$RANDOM-$i; \
               next=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url} %header{x-served-by}' \
                 --data-urlencode name=stacktest --data-urlencode message=$marker \
                 https://www.foobar.com/guestbook); \
               set -- $next; \
               if [ \"$1\" != 303 ]; then echo \"$marker POST $next\"; continue; fi; \
               page=$(curl -s -D - \"$2\"); \
               by=$(printf '%s' \"$page\" | tr -d '\\r' | sed -n 's/^x-served-by: //Ip' | head -n1); \
               if printf '%s' \"$page\" | grep -q \"$marker\"; then echo \"$marker seen $3 $by\"; \
               else echo \"$marker missing $3 $by\"; fi; \
             done",
        )
        .await?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 10, "expected 10 results: {out}");
    let missing: Vec<&&str> = lines.iter().filter(|l| !l.contains(" seen ")).collect();
    ensure!(
        missing.is_empty(),
        "posts not on the next page view: {missing:?}"
    );
    let crossed = lines
        .iter()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() == 4 && words[2] != words[3]
        })
        .count();
    progress(&format!(
        "10 of 10 seen; {crossed} read by the other web server"
    ));
    ensure!(
        crossed > 0,
        "no read went to the other web server: {lines:?}"
    );
    Ok(())
}

/// Kill lb-1: foobar-dns stops answering its address; start it again: it answers both.
async fn dns_answers_the_healthy_balancers(stack: &Stack) -> anyhow::Result<()> {
    let both = vec![Stack::edge_address(11), Stack::edge_address(12)];
    ensure!(
        stack.www_addresses().await? == both,
        "not both balancers at first"
    );
    stack
        .compose_ok(&["kill", "--signal", "SIGKILL", "lb-1"])
        .await?;
    let only_lb2 = vec![Stack::edge_address(12)];
    let after = wait_for_answer(stack, &only_lb2, Duration::from_secs(20))
        .await
        .context("after killing lb-1")?;
    progress(&format!(
        "lb-1 left the answer {:.1} s after its kill",
        after.as_secs_f64()
    ));
    stack.compose_ok(&["start", "lb-1"]).await?;
    let after = wait_for_answer(stack, &both, Duration::from_secs(60))
        .await
        .context("after starting lb-1")?;
    progress(&format!(
        "lb-1 back in the answer {:.1} s after its start",
        after.as_secs_f64()
    ));
    stack.wait_healthy(Duration::from_secs(60)).await?;
    Ok(())
}

async fn wait_for_answer(
    stack: &Stack,
    expected: &[IpAddr],
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let answer = stack.www_addresses().await;
        if answer.as_deref().ok() == Some(expected) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("foobar-dns still answers {answer:?}, not {expected:?}, after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// RFC 2182: two DNS servers, so one down is no outage. dns-1 killed, then dns-2 frozen
/// (`docker compose pause`): the client container (glibc, both servers in resolv.conf) and
/// the demo's visitor (both servers, 300 ms each) still resolve www.foobar.com every time, and
/// curl gets the site; the server is restored and the stack waited for after each.
async fn a_dns_server_down_fails_no_lookup(stack: &Stack) -> anyhow::Result<()> {
    let balancers = vec![Stack::edge_address(11), Stack::edge_address(12)];
    for (service, fault, undo) in [
        ("dns-1", ["kill", "--signal", "SIGKILL"].as_slice(), "start"),
        ("dns-2", ["pause"].as_slice(), "unpause"),
    ] {
        let mut args = fault.to_vec();
        args.push(service);
        stack.compose_ok(&args).await?;
        let outcome = async {
            let out = stack
                .client(
                    "for i in 1 2 3 4 5; do \
                       if getent ahostsv4 www.foobar.com > /dev/null; then echo resolved; \
                       else echo unresolved; fi; \
                       curl -s -o /dev/null -w '%{http_code}\\n' https://www.foobar.com/; \
                     done",
                )
                .await?;
            let lines: Vec<&str> = out.lines().collect();
            ensure!(
                lines == ["resolved", "200"].repeat(5),
                "with {service} down, the client container got {lines:?}"
            );
            let resolver = foobar_demo::resolve::Resolver::new(
                &stack.dns_servers(),
                stack_support::SITE,
                Duration::from_millis(300),
            )?;
            for _ in 0..5 {
                let mut addresses = resolver
                    .lookup()
                    .await
                    .with_context(|| format!("the visitor's lookup with {service} down"))?;
                addresses.sort();
                ensure!(addresses == balancers, "with {service} down: {addresses:?}");
            }
            anyhow::Ok(())
        }
        .await;
        stack.compose_ok(&[undo, service]).await?;
        outcome?;
        stack.wait_healthy(Duration::from_secs(60)).await?;
        progress(&format!("{} {service}: every lookup answered", fault[0]));
    }
    Ok(())
}

/// Every admin action is refused to a visitor: from the `client` container on `edge`, each
/// balancer's drain and enable, foobar-dns's admin port, and Prometheus's write endpoints
/// through the balancers (reload, quit, the admin API: 401 without its login) change
/// nothing, even with the admin token; Prometheus still answers after `/-/quit`. From the host's loopback, through the
/// published admin port, drain needs the token and works with it, and enable undoes it.
async fn admin_actions_only_for_operators(stack: &Stack) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(stack.repo.join("secrets/admin_token"))
        .context("secrets/admin_token")?;
    let token = token.trim();
    let mut dns_servers = Vec::new();
    for service in ["dns-1", "dns-2"] {
        let address = stack
            .addresses(service)
            .await?
            .into_iter()
            .find(|a| a.to_string().starts_with(stack_support::EDGE_NET))
            .with_context(|| format!("{service} has no address on edge"))?;
        dns_servers.push(address);
    }
    let mut attempts = Vec::new();
    for lb in [11, 12].map(Stack::edge_address) {
        for action in ["drain", "enable"] {
            attempts.push(format!("http://{lb}:9100/backends/web-a:8080/{action}"));
        }
    }
    for dns in &dns_servers {
        attempts.push(format!("http://{dns}:9153/reload"));
    }
    let prometheus = [
        "/-/reload",
        "/-/quit",
        "/api/v1/admin/tsdb/snapshot",
        "/api/v1/admin/tsdb/clean_tombstones",
        "/api/v1/admin/tsdb/delete_series?match[]=up",
    ];
    for path in prometheus {
        attempts.push(format!("https://status.foobar.com{path}"));
    }
    // Each attempt twice: without a token, and with the operator's (a leaked token alone
    // must not be enough from here). `-g`: the brackets are the URL's, not a curl glob; an
    // empty `Authorization:` makes curl send none.
    let script: String = attempts
        .iter()
        .map(|url| {
            format!(
                "for auth in none token; do \
                   value=''; [ $auth = token ] && value='Bearer {token}'; \
                   printf '%s %s ' $auth '{url}'; \
                   curl -gs -o /dev/null -w '%{{http_code}}\\n' --max-time 5 -X POST \
                     -H \"Authorization:${{value:+ $value}}\" '{url}'; \
                 done; "
            )
        })
        .collect::<String>()
        + &format!(
            "curl -s -o /dev/null -w 'after %{{http_code}}\\n' --max-time 5 -u '{}' \
             https://status.foobar.com/-/ready",
            prometheus_login(stack)?
        );
    let out = stack.client(&script).await?;
    let mut answered = 0;
    for line in out.lines() {
        let Some(status) = line.rsplit(' ').next() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("after ") {
            ensure!(
                rest == "200",
                "Prometheus after the attempts to stop it: {rest}"
            );
            continue;
        }
        answered += 1;
        // An answer that refuses; 000 (no answer) would prove nothing.
        let refused = matches!(status, "401" | "403" | "404" | "405") || status.starts_with('5');
        ensure!(
            refused,
            "from the client container: {} (done, not refused)",
            line.replace(token, "TOKEN")
        );
    }
    ensure!(
        answered == attempts.len() * 2 && out.contains("after "),
        "the client container's attempts did not all run:\n{}",
        out.replace(token, "TOKEN")
    );
    // The balancers' and foobar-dns's admin listeners must have answered, not merely been
    // unreachable: the refusal is theirs.
    ensure!(
        out.lines()
            .filter(|l| l.contains(":9100/") || l.contains(":9153/"))
            .all(|l| l.ends_with(" 403")),
        "an admin port did not answer 403 to the client container:\n{}",
        out.replace(token, "TOKEN")
    );

    // The host's loopback, through lb-1's published admin port.
    let admin = stack.compose_ok(&["port", "lb-1", "9100"]).await?;
    let admin = admin.trim();
    let post = |action: &'static str, auth: Option<String>| {
        let url = format!("http://{admin}/backends/web-a:8080/{action}");
        async move {
            let mut curl = tokio::process::Command::new("curl");
            curl.args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(["-X", "POST", &url]);
            if let Some(auth) = auth {
                curl.args(["-H", &auth]);
            }
            let out = curl.output().await?;
            Ok::<_, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let bearer = format!("Authorization: Bearer {token}");
    ensure!(
        post("drain", None).await? == "401",
        "the host's loopback without the token: not 401"
    );
    ensure!(
        post("drain", Some(bearer.clone())).await? == "200",
        "drain from the host's loopback with the token: not 200"
    );
    let status = |admin: String| async move {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                &format!("http://{admin}/status.json"),
            ])
            .output()
            .await?;
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let json = status(admin.to_owned()).await?;
    ensure!(
        json.contains("\"state\":\"DRAIN\""),
        "drained, but lb-1's status.json shows no DRAIN: {json}"
    );
    ensure!(
        post("enable", Some(bearer)).await? == "200",
        "enable from the host's loopback with the token: not 200"
    );
    // Back in service before the next check sends traffic.
    let started = Instant::now();
    while status(admin.to_owned())
        .await?
        .contains("\"state\":\"DRAIN\"")
    {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "web-a still drained on lb-1 10 s after enable"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// `make deploy` (scripts/deploy.sh) recreates web-a, web-b, lb-1 and lb-2 one at a time
/// while the demo's visitors read and write: not one request fails.
async fn a_rolling_deploy_fails_nothing(stack: &Stack) -> anyhow::Result<()> {
    let load = Load::start(
        Arc::new(stack.visitor_config()),
        &LoadConfig {
            readers: 2,
            writers: 1,
            read_rate: 40.0,
            write_rate: 10.0,
            ..LoadConfig::default()
        },
        Instant::now(),
    )?;
    let deploy = tokio::process::Command::new("bash")
        .arg(stack.repo.join("scripts/deploy.sh"))
        .env("COMPOSE_ENV_FILE", &stack.env_file)
        .status()
        .await;
    // A little load after the last balancer is back, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = load.stop().await;
    ensure!(deploy?.success(), "scripts/deploy.sh failed");
    let failed: Vec<_> = records.iter().filter(|r| !r.ok()).collect();
    let by_web = records
        .iter()
        .fold(BTreeMap::<String, u32>::new(), |mut m, r| {
            *m.entry(r.web.clone().unwrap_or_default()).or_default() += 1;
            m
        });
    progress(&format!(
        "{} requests during the deploy, {} failed; served by {by_web:?}",
        records.len(),
        failed.len()
    ));
    ensure!(
        records.len() > 100,
        "only {} requests were sent",
        records.len()
    );
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        records.len(),
        failed.first()
    );
    Ok(())
}

/// The demo's scenario, shortened: dns-1, dns-2, web-a, lb-1, router-a, db-replica and
/// db-primary killed
/// under load and restored, one at a time. No request fails but while the primary is down,
/// and writes fail for at most 10 s then; no acknowledged write is lost; each restore ends all-healthy.
/// The failover demo's every fault on every component, with its targets: no failed
/// request but the primary's writes, a bounded write outage, no acknowledged write lost,
/// every service healthy and full redundancy (a writer and a replicating reader) again
/// after each restore. The bounds are looser than the demo's targets (a shared CI machine);
/// `make demo` measures against the targets themselves.
async fn the_demo_faults(stack: &Stack) -> anyhow::Result<()> {
    // Every component killed; then the faults that leave a process alive but silent, on
    // the components where that differs from a kill: the ones that hold requests in flight
    // (a web server, a balancer, a router) and the primary. (A frozen DNS server is in
    // `a_dns_server_down_fails_no_lookup`; `make demo` runs every fault on everything.)
    the_demo(stack, &[Fault::Kill], &[]).await?;
    the_demo(
        stack,
        &[Fault::Pause, Fault::Partition, Fault::Partial],
        &["web-a", "lb-1", "router-a", "db-primary"],
    )
    .await
}

/// The demo's `faults` on `components` (all, when empty), checked against its targets.
async fn the_demo(stack: &Stack, faults: &[Fault], components: &[&str]) -> anyhow::Result<()> {
    let config = Config {
        visitor: stack.visitor_config(),
        load: LoadConfig {
            readers: 2,
            writers: 2,
            read_rate: 50.0,
            write_rate: 10.0,
            ..LoadConfig::default()
        },
        compose_dir: stack.repo.clone(),
        compose_file: Some(stack.repo.join("docker-compose.yml")),
        compose_env_file: Some(stack.env_file.clone()),
        faults: faults.to_vec(),
        components: if components.is_empty() {
            Config::default().components
        } else {
            components.iter().map(|c| c.to_string()).collect()
        },
        warmup: Duration::from_secs(3),
        // Long enough for a frozen primary to be replaced (its replica notices in 1 s).
        hold: Duration::from_secs(7),
        settle: Duration::from_secs(2),
        healthy_timeout: Duration::from_secs(90),
        targets: Targets {
            max_write_outage: Duration::from_secs(10),
            ..Targets::default()
        },
    };
    let report = Scenario::run(&config, |line| eprintln!("{line}")).await?;
    eprintln!("{}", report.text());
    ensure!(
        report.skipped.is_empty(),
        "not killed: {:?}",
        report.skipped
    );
    for result in &report.components {
        let component = format!("{} {}", result.fault.name(), result.component);
        // A fault of the primary may fail writes (those in flight on it die with it); its
        // bound is the write outage below. Reads never fail: the replica answers them.
        ensure!(
            result.failed_reads == 0,
            "{component}: {} failed reads",
            result.failed_reads
        );
        if result.component != "db-primary" {
            ensure!(
                result.failed_writes == 0,
                "{component}: {} failed writes",
                result.failed_writes
            );
        }
        let verdict = result.verdict(&config.targets);
        ensure!(
            verdict.write_outage,
            "{component}: writes failed for {:.1} s{}",
            result.write_outage.as_secs_f64(),
            if result.outage_open {
                " and had not recovered"
            } else {
                ""
            }
        );
        ensure!(
            verdict.acked_lost,
            "{component}: {} acknowledged writes lost",
            result.acked_lost
        );
        ensure!(
            verdict.to_healthy,
            "{component}: not all-healthy within 30 s of the restore"
        );
        ensure!(
            verdict.redundant,
            "{component}: no writer with a replicating reader within 30 s of the restore"
        );
    }
    ensure!(
        report.verification.passed(),
        "the final check of the writes failed"
    );
    Ok(())
}
