//! The command line every service binary shares, and the `main` that runs a service.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::{self, ServiceConfig};
use crate::lifecycle::{self, Context};
use crate::{admin, telemetry};

/// What a service tells the shared code about itself.
pub struct ServiceInfo {
    /// The binary's name, as in `--help` and error messages: `foobar-dns`.
    pub binary: &'static str,
    /// One paragraph for `--help`.
    pub about: &'static str,
    /// Environment overrides start with this and `_`: `FOOBAR_DNS`.
    pub env_prefix: &'static str,
    /// Every metric's name starts with this and `_`: `foobar_dns`.
    pub metrics_prefix: &'static str,
}

#[derive(Parser, Debug)]
struct Args {
    /// Read the configuration from FILE (TOML). Without it, the built-in defaults are used.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Validate the configuration, print the effective one (file, then environment), and exit:
    /// 0 when it is valid, 2 with the file, line and key of the problem when it is not.
    #[arg(long)]
    check_config: bool,

    /// Ask the running service at the configured admin address whether it is ready, and exit 0
    /// when it is, 1 when it is not: the container healthcheck.
    #[arg(long, conflicts_with = "check_config")]
    probe: bool,
}

/// Parses the command line, loads the config and runs the service until SIGTERM or Ctrl-C.
///
/// `run` gets the validated config and a [`Context`]; it must mark the context ready once it
/// can serve, and return once `ctx.shutdown` is cancelled and its in-flight work is done.
pub fn main<C, F, Fut>(info: &ServiceInfo, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, Context) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let command = Args::command()
        .name(info.binary)
        .bin_name(info.binary)
        .about(info.about)
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(help_footer::<C>(info));
    let args = match Args::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };

    let config: C = match config::load(args.config.as_deref(), info.env_prefix, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}: invalid configuration: {e}", info.binary);
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", config::render(&config));
        eprintln!("{}: configuration is valid", info.binary);
        return ExitCode::SUCCESS;
    }
    if args.probe {
        return probe(config.common().admin_listen);
    }

    telemetry::init();
    let runtime = match runtime(config.common().worker_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", info.binary);
            return ExitCode::FAILURE;
        }
    };
    let origin = lifecycle::ConfigOrigin {
        path: args.config,
        env_prefix: info.env_prefix,
    };
    match runtime.block_on(serve(info, config, origin, run)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime for `worker_threads` (see [`config::CommonConfig::worker_threads`]).
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

/// Runs the admin listener and the service side by side. Either one failing stops the other;
/// after a shutdown signal, both get `shutdown_timeout` to finish.
async fn serve<C, F, Fut>(
    info: &ServiceInfo,
    config: C,
    origin: lifecycle::ConfigOrigin,
    run: F,
) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, Context) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let ctx = Context::new(info.metrics_prefix).with_config_origin(origin);
    let common = config.common().clone();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "{} starting",
        info.binary
    );

    let stop_all_on_exit = |ctx: Context, task: &'static str| {
        move |result: anyhow::Result<()>| {
            if !ctx.shutdown.is_cancelled() {
                if let Err(e) = &result {
                    tracing::error!("{task} failed: {e:#}");
                }
                ctx.shutdown.cancel();
            }
            result
        }
    };
    let admin_router = admin::router(&ctx);
    let admin_access = admin::AdminAccess::new(&common);
    let admin = tokio::spawn({
        let ctx = ctx.clone();
        let done = stop_all_on_exit(ctx.clone(), "admin listener");
        async move {
            done(
                admin::serve(
                    "admin",
                    common.admin_listen,
                    admin_router,
                    admin_access,
                    ctx,
                )
                .await,
            )
        }
    });
    let service = tokio::spawn({
        let done = stop_all_on_exit(ctx.clone(), "service");
        let fut = run(config, ctx.clone());
        async move { done(fut.await) }
    });
    tokio::spawn(lifecycle::stop_on_signal(
        ctx.clone(),
        common.shutdown_delay,
    ));
    tokio::spawn(lifecycle::reload_on_sighup(ctx.clone()));

    let both = async {
        let (service, admin) = tokio::join!(service, admin);
        service?.and(admin?)
    };
    let deadline = async {
        ctx.shutdown.cancelled().await;
        tokio::time::sleep(common.shutdown_timeout).await;
    };
    tokio::select! {
        result = both => result,
        () = deadline => Err(anyhow::anyhow!(
            "in-flight work did not finish within shutdown_timeout ({:?}); exiting anyway",
            common.shutdown_timeout
        )),
    }
}

/// `--help`'s last part: every environment override, read from the config type's defaults.
fn help_footer<C: ServiceConfig>(info: &ServiceInfo) -> String {
    let keys = config::env_keys::<C>(info.env_prefix);
    let width = keys.iter().map(|(_, var)| var.len()).max().unwrap_or(0);
    let mut out = String::from(
        "Environment overrides (applied over the config file; nested keys joined by `__`):\n",
    );
    for (key, var) in &keys {
        out.push_str(&format!("  {var:width$}  {key}\n"));
    }
    out.push_str(
        "\nLogging: RUST_LOG sets the filter (default `info`), e.g. RUST_LOG=debug or \
         RUST_LOG=warn,foobar=debug.",
    );
    out
}

/// Asks the admin listener's `/readyz`. An unspecified listen address means "this host".
fn probe(mut addr: SocketAddr) -> ExitCode {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            rt.block_on(crate::probe::http_status(
                addr,
                "/readyz",
                Duration::from_secs(3),
            ))
        });
    match answer {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("not ready: http://{addr}/readyz answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("not ready: http://{addr}/readyz: {e}");
            ExitCode::FAILURE
        }
    }
}
