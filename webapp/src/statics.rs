//! Static files: tower-http's `ServeDir` (content types, ETag and Last-Modified with 304s,
//! Range requests, precompressed `.br`/`.gz` variants by Accept-Encoding, no path outside the
//! folder), plus what a site needs around it: Cache-Control by kind of file, and the site's own
//! 404 page instead of an empty body.
//!
//! Fingerprinted files (`site.3f2a9c1b.css`: a name that changes whenever the content does)
//! may be cached for a year; everything else for a minute, so an edit shows up soon.
//!
//! [`MemoryBackend`] is ServeDir's file system for small files: the folder is part of the
//! image and does not change while the server runs, so files up to `http.cache_max_file_size`
//! are read once at start and every request is answered from memory, without the open, stat
//! and read that a blocking-pool thread would do for each request. ServeDir's HTTP logic is
//! untouched; only where bytes come from changes. A path that is not in the snapshot (a bigger
//! file, or one added later) is read from disk as before. Restart to pick up edited files.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend, File, Metadata, TokioBackend, TokioFile};

use crate::AppState;

/// A year, for files whose name changes with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A minute, for files that keep their name when edited.
const SHORT: &str = "public, max-age=60";

/// The static folder, ready to serve. Cheap to clone.
#[derive(Clone)]
pub struct StaticFiles {
    dir: ServeDir<tower_http::services::fs::DefaultServeDirFallback, MemoryBackend>,
}

impl StaticFiles {
    /// Snapshots the small files of `root` and serves the folder.
    pub fn new(root: &Path, cache_max_file_size: u64) -> Self {
        let backend = MemoryBackend::load(root, cache_max_file_size);
        tracing::info!(
            files = backend.files.values().filter(|f| !f.meta.is_dir).count(),
            bytes = backend.files.values().map(|f| f.meta.len).sum::<u64>(),
            "static files cached in memory"
        );
        Self {
            // A file's bytes go out in chunks of this size: ServeDir's default (64 KiB) would
            // allocate that much for every 4 KB page.
            dir: ServeDir::with_backend(root, backend)
                .with_buf_chunk_size(16 * 1024)
                .precompressed_br()
                .precompressed_gzip(),
        }
    }
}

/// Serves a request from the static folder; not found becomes the site's 404 page.
pub async fn serve(State(state): State<AppState>, request: Request) -> Response {
    let cache_control = if is_fingerprinted(request.uri().path()) {
        IMMUTABLE
    } else {
        SHORT
    };
    let Ok(mut response) = state.files.dir.clone().oneshot(request).await;
    match response.status() {
        StatusCode::NOT_FOUND => crate::pages::not_found(&state),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED => {
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            response.into_response()
        }
        _ => response.into_response(),
    }
}

/// Whether the last path segment is `name.HASH.ext` with HASH at least 8 hex digits.
pub fn is_fingerprinted(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or("");
    let mut parts = file.rsplit('.');
    let (Some(_ext), Some(hash), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !stem.is_empty() && hash.len() >= 8 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What ServeDir asks about a path, from memory or from disk.
#[derive(Clone, Debug)]
pub struct FileMeta {
    is_dir: bool,
    modified: Option<SystemTime>,
    len: u64,
}

impl From<std::fs::Metadata> for FileMeta {
    fn from(meta: std::fs::Metadata) -> Self {
        Self {
            is_dir: meta.is_dir(),
            modified: meta.modified().ok(),
            len: meta.len(),
        }
    }
}

impl Metadata for FileMeta {
    fn is_dir(&self) -> bool {
        self.is_dir
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.modified
            .ok_or_else(|| io::Error::other("modification time unavailable"))
    }

    fn len(&self) -> u64 {
        self.len
    }
}

struct Snapshot {
    meta: FileMeta,
    bytes: Arc<[u8]>,
}

/// ServeDir's file system: a snapshot of the small files, the disk for everything else.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    files: Arc<HashMap<PathBuf, Snapshot>>,
}

impl MemoryBackend {
    /// Reads every file of `root` (recursively) up to `max_size` bytes, and the folders.
    fn load(root: &Path, max_size: u64) -> Self {
        let mut files = HashMap::new();
        if max_size > 0 {
            let mut pending = vec![root.to_owned()];
            while let Some(dir) = pending.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for path in entries.flatten().map(|entry| entry.path()) {
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    if meta.is_dir() {
                        pending.push(path.clone());
                    } else if meta.len() > max_size {
                        continue;
                    }
                    let bytes: Arc<[u8]> = if meta.is_dir() {
                        Arc::from(Vec::new())
                    } else {
                        match std::fs::read(&path) {
                            Ok(bytes) => bytes.into(),
                            Err(e) => {
                                tracing::warn!("{}: not cached: {e}", path.display());
                                continue;
                            }
                        }
                    };
                    files.insert(
                        path,
                        Snapshot {
                            meta: meta.into(),
                            bytes,
                        },
                    );
                }
            }
        }
        Self {
            files: Arc::new(files),
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

impl Backend for MemoryBackend {
    type File = StaticFile;
    type Metadata = FileMeta;
    type OpenFuture = BoxFuture<'static, StaticFile>;
    type MetadataFuture = BoxFuture<'static, FileMeta>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        match self.files.get(&path).filter(|file| !file.meta.is_dir) {
            Some(file) => {
                let file = StaticFile::Memory(Cursor::new(file.bytes.clone()), file.meta.clone());
                Box::pin(std::future::ready(Ok(file)))
            }
            None => Box::pin(async move {
                let file = TokioBackend.open(path).await?;
                Ok(StaticFile::Disk(file))
            }),
        }
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        match self.files.get(&path) {
            Some(file) => Box::pin(std::future::ready(Ok(file.meta.clone()))),
            None => Box::pin(async move { Ok(tokio::fs::metadata(path).await?.into()) }),
        }
    }
}

/// An open file: bytes in memory, or a file on disk.
pub enum StaticFile {
    Memory(Cursor<Arc<[u8]>>, FileMeta),
    Disk(TokioFile),
}

impl AsyncRead for StaticFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Memory(cursor, _) => Pin::new(cursor).poll_read(cx, buf),
            Self::Disk(file) => Pin::new(file).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for StaticFile {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            Self::Memory(cursor, _) => Pin::new(cursor).start_seek(position),
            Self::Disk(file) => Pin::new(file).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            Self::Memory(cursor, _) => Pin::new(cursor).poll_complete(cx),
            Self::Disk(file) => Pin::new(file).poll_complete(cx),
        }
    }
}

impl File for StaticFile {
    type Metadata = FileMeta;
    type MetadataFuture<'a> = BoxFuture<'a, FileMeta>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        match self {
            Self::Memory(_, meta) => Box::pin(std::future::ready(Ok(meta.clone()))),
            Self::Disk(file) => Box::pin(async move { Ok(File::metadata(file).await?.into()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_fingerprinted;

    #[test]
    fn fingerprints_are_hex_between_name_and_extension() {
        assert!(is_fingerprinted("/assets/site.3f2a9c1b.css"));
        assert!(!is_fingerprinted("/assets/site.3f2a9c1b.css.gz"));
        assert!(!is_fingerprinted("/robots.txt"));
        assert!(!is_fingerprinted("/assets/site.css"));
        assert!(!is_fingerprinted("/assets/site.notahash.css"));
        assert!(!is_fingerprinted("/.3f2a9c1b.css"));
    }
}
