//! The operator's commands, run beside a running router (the router image has no curl):
//!
//! - `foobar-db-router rejoin [--config FILE] [NODE]`: makes a fenced old primary a replica
//!   of the current primary. Exit 0 when rejoined; 1 with the router's reason otherwise
//!   (errant transactions, no fenced node, no primary).
//! - `foobar-db-router topology [--config FILE]`: prints the router's `GET /topology`.
//! - `foobar-db-router promote [--give-up GTIDS] [--without PEER,...] [--config FILE]`:
//!   forces the promotion the router refuses (`failover_blocked`), giving up the transactions
//!   named, and/or without asking the peer routers named (ones that do not answer).
//!
//! Both ask the running router through its admin listener (as `--probe` asks `/readyz`)
//! rather than act themselves: the running router's monitor knows which node is the primary
//! and which is fenced, and a second monitor would only race it. A rejoin carries the admin
//! token (`Authorization: Bearer`) read from `service.admin_token_file`, the file the router
//! itself checks it against. In the stack:
//! `docker compose exec router-a foobar-db-router rejoin --config /etc/foobar/db-router.toml`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::peers::ask;

/// A rejoin waits for the node to catch up (20 s at most) before it answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the command line names one of these commands rather than running the service.
pub fn requested() -> bool {
    matches!(
        std::env::args().nth(1).as_deref(),
        Some("rejoin" | "topology" | "promote")
    )
}

/// Runs the command the command line names.
pub fn run() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let rejoin = command == "rejoin";
    let mut config = None;
    let mut node = None;
    let mut give_up = None;
    let mut without = None;
    let mut args = std::env::args().skip(2);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--give-up" if command == "promote" => give_up = args.next(),
            "--without" if command == "promote" => without = args.next(),
            "-h" | "--help" => {
                println!(
                    "usage: foobar-db-router rejoin [--config FILE] [NODE]\n       \
                     foobar-db-router topology [--config FILE]\n       \
                     foobar-db-router promote [--give-up GTIDS] [--without PEER,...] \
                     [--config FILE]\n\n\
                     rejoin asks the running router (its admin listener, from FILE) to make \
                     the fenced node\nNODE (default: the only fenced one) a replica of the \
                     current primary.\ntopology prints the router's view: epoch, writer, \
                     reader, each node's health.\npromote forces the promotion the router refuses \
                     (failover_blocked in topology),\ngiving up the transactions GTIDS names \
                     (e.g. 0-1-56): they are lost;\nwith --without, the promotion does \
                     not ask the peer routers named (monitor.peers,\ne.g. router-b:9102): \
                     whatever they acknowledged beyond the candidate is lost."
                );
                return ExitCode::SUCCESS;
            }
            name if rejoin && !name.starts_with('-') && node.is_none() => {
                node = Some(name.to_owned());
            }
            other => {
                eprintln!("foobar-db-router: unexpected argument `{other}` (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    let config: crate::Config = match foobar_service::config::load(
        config.as_deref(),
        crate::SERVICE.env_prefix,
        std::env::vars(),
    ) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("foobar-db-router: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut admin = config.service.admin_listen;
    if admin.ip().is_unspecified() {
        admin.set_ip(match admin.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let (method, path) = match (command.as_str(), &node, (&give_up, &without)) {
        ("rejoin", Some(node), _) => ("POST", format!("/rejoin?node={node}")),
        ("rejoin", None, _) => ("POST", "/rejoin".to_owned()),
        ("promote", _, (None, None)) => {
            eprintln!(
                "foobar-db-router: promote needs --give-up GTIDS or --without PEER (see --help)"
            );
            return ExitCode::from(2);
        }
        ("promote", _, (gtids, peers)) => (
            "POST",
            format!(
                "/promote?give_up={}&without={}",
                gtids.as_deref().unwrap_or_default(),
                peers
                    .as_deref()
                    .map(super::peers::encode)
                    .unwrap_or_default()
            ),
        ),
        _ => ("GET", "/topology".to_owned()),
    };
    // Without the file, the request goes without a token and the router says why it refuses.
    let token = match std::fs::read_to_string(&config.service.admin_token_file) {
        Ok(token) => Some(token.trim().to_owned()),
        Err(e) if rejoin => {
            eprintln!(
                "foobar-db-router: the admin token file {} cannot be read ({e}); asking \
                 without a token",
                config.service.admin_token_file.display()
            );
            None
        }
        Err(_) => None,
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            rt.block_on(ask(
                &admin.to_string(),
                method,
                &path,
                token.as_deref(),
                ANSWER_TIMEOUT,
            ))
        });
    match answer {
        Ok((200 | 202, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprint!("foobar-db-router: {method} http://{admin}{path} answered {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "foobar-db-router: {method} http://{admin}{path}: {e} (is the router running?)"
            );
            ExitCode::FAILURE
        }
    }
}
