//! `foobar-demo`: the failover demo against the running stack (`make demo`, docs/demo.md).
//! Exit 0 when every target is met, 1 when one is missed, 2 when the demo could not run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use foobar_demo::account::Targets;
use foobar_demo::faults::{self, Fault};
use foobar_demo::load::LoadConfig;
use foobar_demo::swarm::{self, Swarm};
use foobar_demo::visitor::VisitorConfig;
use foobar_demo::{Config, Scenario};

/// Applies faults (kill, pause, partition; partial for the database pair) to the stack's
/// components one at a time under a steady load of reads and writes sent as a visitor sends
/// them (DNS through foobar-dns, HTTPS through the balancers), restores each, and reports
/// what the visitor saw: a line per second, a table row per fault and component with the
/// targets, and an SVG timeline. Needs the stack up (make up), or with --swarm on Docker
/// Swarm (make swarm-up). Durations are in seconds.
#[derive(Debug, Parser)]
#[command(name = "foobar-demo", version)]
struct Args {
    /// The DNS servers (dns-1, dns-2), asked for www.foobar.com before every new connection:
    /// the one that answered last first, the next when it does not answer in --dns-timeout.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:5353,127.0.0.1:5354"
    )]
    dns: Vec<SocketAddr>,
    /// How long one DNS server has to answer before the next is asked.
    #[arg(long, default_value = "0.3", value_parser = seconds)]
    dns_timeout: Duration,
    /// The site's name (DNS, TLS SNI, Host).
    #[arg(long, default_value = "www.foobar.com")]
    host: String,
    /// HTTPS port on the balancers' addresses.
    #[arg(long, default_value_t = 443)]
    port: u16,
    /// CA certificate the balancers' certificate is signed by (make up copies it there).
    #[arg(long, default_value = "tls/ca.pem")]
    ca: PathBuf,
    /// A TCP connect or TLS handshake slower than this moves on to the next address.
    #[arg(long, default_value = "0.5", value_parser = seconds)]
    connect_timeout: Duration,
    /// One attempt of a request, connecting included; past it a GET, or a POST with its
    /// Idempotency-Key, goes again to another address (3 attempts at most).
    #[arg(long, default_value = "1.5", value_parser = seconds)]
    attempt_timeout: Duration,
    /// The longest one request may take, every attempt included.
    #[arg(long, default_value = "10", value_parser = seconds)]
    request_timeout: Duration,
    /// Requests a connection carries before a new one (with a new DNS answer) is made.
    #[arg(long, default_value_t = 100)]
    max_requests_per_connection: u32,
    /// Age after which a connection is replaced.
    #[arg(long, default_value = "10", value_parser = seconds)]
    max_connection_age: Duration,
    /// Concurrent readers (GET --read-path).
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Concurrent writers (POST /api/posts).
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Reads per second, all readers together.
    #[arg(long, default_value_t = 100.0)]
    read_rate: f64,
    /// Writes per second, all writers together.
    #[arg(long, default_value_t = 20.0)]
    write_rate: f64,
    #[arg(long, default_value = "/api/posts?limit=5")]
    read_path: String,
    /// Each fault hits these in this order, each restored before the next. db-primary and
    /// db-replica are roles: the node router-a calls the writer, or the reader, at that moment.
    /// [default: dns-1,dns-2,web-a,lb-1,router-a,db-replica,db-primary; with --swarm
    /// dns,balancer,web,router-a,router-b,db-replica,db-primary,prometheus]
    #[arg(long, value_delimiter = ',')]
    components: Option<Vec<String>>,
    /// kill (SIGKILL), pause (docker pause), partition (every packet dropped), partial (the
    /// primary cut from the replica): each applied to every component, in this order.
    /// partition and partial need root (iptables in the container's network namespace).
    #[arg(long, default_value = "kill", value_parser = fault_list)]
    faults: FaultList,
    /// Load before the first kill.
    #[arg(long, default_value = "5", value_parser = seconds)]
    warmup: Duration,
    /// How long each fault lasts (not a kill on a swarm: the engine restores at once).
    #[arg(long, default_value = "10", value_parser = seconds)]
    hold: Duration,
    /// Load between all-healthy and the next fault.
    #[arg(long, default_value = "5", value_parser = seconds)]
    settle: Duration,
    /// Longest wait for every service to be healthy after a restore.
    #[arg(long, default_value = "120", value_parser = seconds)]
    healthy_timeout: Duration,
    /// Folder of the stack's docker-compose.yml.
    #[arg(long, default_value = ".")]
    compose_dir: PathBuf,
    /// A compose file other than the folder's own.
    #[arg(long)]
    compose_file: Option<PathBuf>,
    /// An environment file for docker compose (--env-file), e.g. naming another project.
    #[arg(long)]
    compose_env_file: Option<PathBuf>,
    /// The stack on Docker Swarm of this name (make swarm-up deploys `foobar`) instead of
    /// compose: a kill hits one task, the engine starts a new one (kill only).
    #[arg(long, value_name = "STACK")]
    swarm: Option<String>,
    /// Where the SVG timeline goes.
    #[arg(long, default_value = "dist/demo-timeline.svg")]
    svg: PathBuf,
    /// Target: failed requests allowed per fault.
    #[arg(long, default_value_t = 0)]
    max_failed: u64,
    /// Components whose faults may fail reads (none: reads go to the replica).
    #[arg(long, value_delimiter = ',')]
    may_fail_reads: Vec<String>,
    /// Components whose faults may fail writes (bounded by the write outage).
    #[arg(long, value_delimiter = ',', default_value = "db-primary")]
    may_fail_writes: Vec<String>,
    /// Target: longest write outage.
    #[arg(long, default_value = "5", value_parser = seconds)]
    max_write_outage: Duration,
    /// Target: from a restore to every service healthy and to full redundancy (a writer and
    /// a replicating reader).
    #[arg(long, default_value = "30", value_parser = seconds)]
    max_to_healthy: Duration,
    /// A write slower than this counts toward the write outage.
    #[arg(long, default_value = "2", value_parser = seconds)]
    stall: Duration,
}

/// The parsed `--faults` (a newtype: clap would split a bare `Vec` itself).
#[derive(Debug, Clone)]
struct FaultList(Vec<Fault>);

fn fault_list(text: &str) -> Result<FaultList, String> {
    faults::parse_faults(text)
        .map(FaultList)
        .map_err(|e| e.to_string())
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        visitor: VisitorConfig {
            dns_servers: args.dns,
            dns_timeout: args.dns_timeout,
            host: args.host,
            port: args.port,
            ca_file: args.ca,
            connect_timeout: args.connect_timeout,
            attempt_timeout: args.attempt_timeout,
            request_timeout: args.request_timeout,
            max_requests_per_connection: args.max_requests_per_connection,
            max_connection_age: args.max_connection_age,
        },
        load: LoadConfig {
            readers: args.readers,
            writers: args.writers,
            read_rate: args.read_rate,
            write_rate: args.write_rate,
            read_path: args.read_path,
            ..LoadConfig::default()
        },
        compose_dir: args.compose_dir,
        compose_file: args.compose_file,
        compose_env_file: args.compose_env_file,
        components: match (args.components, &args.swarm) {
            (Some(components), _) => components,
            (None, Some(_)) => swarm::COMPONENTS.map(String::from).to_vec(),
            (None, None) => Config::default().components,
        },
        faults: args.faults.0,
        warmup: args.warmup,
        hold: args.hold,
        settle: args.settle,
        healthy_timeout: args.healthy_timeout,
        targets: Targets {
            max_failed: args.max_failed,
            may_fail_reads: args.may_fail_reads,
            may_fail_writes: args.may_fail_writes,
            max_write_outage: args.max_write_outage,
            max_to_healthy: args.max_to_healthy,
            stall: args.stall,
        },
    };
    let out = |line: &str| println!("{line}");
    let report = match &args.swarm {
        Some(stack) => Scenario::run_on(&Swarm::new(stack), &config, out).await,
        None => Scenario::run(&config, out).await,
    };
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("foobar-demo: {error:#}");
            return ExitCode::from(2);
        }
    };
    println!();
    print!("{}", report.text());
    let written = args
        .svg
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&args.svg, report.svg()));
    match written {
        Ok(()) => println!("timeline picture: {}", args.svg.display()),
        Err(error) => eprintln!("foobar-demo: {}: {error}", args.svg.display()),
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
