//! [`metrics!`](crate::metrics!): a service's Prometheus metrics declared once.
//!
//! Each service keeps its metrics in one struct of prometheus-client handles. Without this,
//! every metric was written three times (the field, then its name and help text in a
//! `register` function further down), and the help drifted from the field it described.
//! Declared through the macro, a metric is one field: its doc comment is the help text that
//! `/metrics` serves, and `= "name"` its name under the service's prefix.

/// Declares a struct of metric handles and its `register(ctx) -> Self`, which makes the set
/// (by `Default`) and registers each field that names a metric on `ctx`'s registry. A
/// field's doc comment is its help text; a field without `= "name"` is kept, not registered.
/// The struct's attributes (its derives among them) are written at the call.
///
/// ```
/// use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
///
/// foobar_service::metrics! {
///     #[derive(Clone, Default)]
///     pub struct Metrics {
///         /// Client sessions open now
///         pub sessions: Gauge = "sessions",
///         /// Client connections accepted
///         pub accepted: Counter = "sessions_started",
///     }
/// }
/// let metrics = Metrics::register(&foobar_service::Context::new("example"));
/// metrics.accepted.inc();
/// ```
#[macro_export]
macro_rules! metrics {
    (@register $ctx:ident, $metrics:ident, $field:ident, [$($help:literal),*], $metric:literal) => {
        $ctx.register(
            $metric,
            &$crate::metrics::help(&[$($help),*]),
            ::std::clone::Clone::clone(&$metrics.$field),
        );
    };
    (@register $ctx:ident, $metrics:ident, $field:ident, [$($help:literal),*]) => {};
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $help:literal])*
                $field_vis:vis $field:ident: $ty:ty $(= $metric:literal)?,
            )*
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[doc = $help])*
                $field_vis $field: $ty,
            )*
        }

        impl $name {
            /// A new set, each metric registered on `ctx`'s registry.
            pub fn register(ctx: &$crate::Context) -> Self {
                let metrics = <Self as ::std::default::Default>::default();
                $($crate::metrics!(@register ctx, metrics, $field, [$($help),*] $(, $metric)?);)*
                metrics
            }
        }
    };
}

/// The help text of a metric from its doc comment's lines: each trimmed, joined by spaces.
pub fn help(doc_lines: &[&str]) -> String {
    let lines = doc_lines.iter().map(|line| line.trim());
    lines
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    crate::metrics! {
        #[derive(Clone, Default)]
        struct Sample {
            /// Things counted, over two
            /// lines of doc comment
            counted: Counter = "things",
            /// Kept beside the metrics, never registered
            unregistered: Counter,
        }
    }

    #[test]
    fn each_named_field_is_served_with_its_doc_comment_as_help() {
        let ctx = crate::Context::new("sample");
        let sample = Sample::register(&ctx);
        sample.counted.inc();
        sample.unregistered.inc();
        let mut text = String::new();
        let registry = ctx.metrics.lock().unwrap();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# HELP sample_things Things counted, over two lines of doc comment."),
            "{text}"
        );
        assert!(text.contains("sample_things_total 1"), "{text}");
        assert!(!text.contains("unregistered"), "{text}");
    }
}
