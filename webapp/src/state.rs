//! What every handler shares ([`AppState`]): the instance's name, the database, the
//! guestbook's settings and the static folder. Its own module so that the handlers import it
//! and `lib.rs`, which builds it and routes to them, is imported by none of them.

use std::sync::Arc;

use crate::config::GuestbookConfig;
use crate::db::Database;
use crate::statics::StaticFiles;

/// What every handler shares: one `Arc`, so extracting it per request is one increment.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    /// The name in `X-Served-By` and in every page's footer.
    pub instance: Arc<str>,
    pub db: Database,
    pub guestbook: GuestbookConfig,
    pub files: StaticFiles,
}
