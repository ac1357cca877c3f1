//! Static files: tower-http's `ServeDir` (content types, ETag and Last-Modified with 304s,
//! Range requests, precompressed `.br`/`.gz` variants by Accept-Encoding, no path outside the
//! folder), plus what a site needs around it: Cache-Control by kind of file. A missing file's
//! answer is ServeDir's 404, which [`crate::pages::static_file`] turns into the site's page.
//!
//! Fingerprinted files (`site.3f2a9c1b.css`: a name that changes whenever the content does)
//! may be cached for a year; everything else for a minute, so an edit shows up soon.
//!
//! [`MemoryBackend`] is ServeDir's file system for small files: the folder is part of the
//! image and does not change while the server runs, so files up to `http.cache_max_file_size`
//! are read once at start and every request is answered from memory, without the open, stat
//! and read that a blocking-pool thread would do for each request. A path that is not in the
//! snapshot (a bigger file, or one added later) is read from disk as before. Restart to pick up
//! edited files.
//!
//! [`Prepared`] answers the requests a browser sends for those files (a GET or HEAD, with or
//! without Accept-Encoding and If-None-Match) without ServeDir: at start, ServeDir itself is
//! asked once per file and encoding, and its headers are kept with the bytes. A request is
//! then a map lookup, the encoding choice, the ETag comparison and a clone of the headers.
//! Per request, ServeDir builds and hashes a path, guesses the content type, formats the ETag
//! and the date, and copies the bytes through a read buffer; for a variant the file does not
//! have (`4k.html.gz` for a browser's `Accept-Encoding: gzip`) it even asks the disk, through
//! the blocking pool. What the fast path does not answer (Range, If-Match,
//! If-Unmodified-Since, If-Modified-Since without If-None-Match, a path not spelled exactly
//! as a snapshot file's) goes to ServeDir, so those answers stay ServeDir's own; a test
//! compares the two paths header by header.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Cursor};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{
    Backend, DefaultServeDirFallback, File, Metadata, TokioBackend, TokioFile,
};

/// A year, for files whose name changes with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A minute, for files that keep their name when edited.
const SHORT: &str = "public, max-age=60";

type Dir = ServeDir<DefaultServeDirFallback, MemoryBackend>;

/// The static folder, ready to serve.
pub struct StaticFiles {
    dir: Dir,
    /// The snapshot's files by request path (`/assets/site.3f2a9c1b.css`).
    prepared: HashMap<Box<str>, Prepared>,
}

impl StaticFiles {
    /// Snapshots the small files of `root` and serves the folder.
    pub fn new(root: &Path, cache_max_file_size: u64) -> Self {
        // ServeDir asks for `./ROOT/...` (ROOT itself when it is absolute): the snapshot's
        // paths must be spelled the same way, or a relative `static_dir` would never hit it.
        let root = Path::new(".").join(root);
        let backend = MemoryBackend::load(&root, cache_max_file_size);
        // A file's bytes go out in chunks of this size: ServeDir's default (64 KiB) would
        // allocate that much for every 4 KB page.
        let dir = ServeDir::with_backend(&root, backend.clone())
            .with_buf_chunk_size(16 * 1024)
            .precompressed_br()
            .precompressed_gzip();
        let prepared = Prepared::ask(&dir, &root, &backend);
        tracing::info!(
            files = backend.files.values().filter(|f| !f.meta.is_dir).count(),
            bytes = backend.files.values().map(|f| f.meta.len).sum::<u64>(),
            prepared = prepared.len(),
            "static files cached in memory"
        );
        Self { dir, prepared }
    }

    /// The answer from memory, when the request is one the prepared answers cover (see the
    /// module's comment); None sends it to ServeDir.
    fn answer_prepared(&self, request: &Request) -> Option<Response> {
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        let headers = request.headers();
        // ServeDir ignores an empty If-None-Match, and If-Modified-Since when If-None-Match
        // is there.
        let if_none_match = headers
            .get(header::IF_NONE_MATCH)
            .filter(|value| !value.is_empty());
        if headers.contains_key(header::RANGE)
            || headers.contains_key(header::IF_MATCH)
            || headers.contains_key(header::IF_UNMODIFIED_SINCE)
            || (if_none_match.is_none() && headers.contains_key(header::IF_MODIFIED_SINCE))
        {
            return None;
        }
        let representation = self.prepared.get(request.uri().path())?.negotiate(headers);
        let unchanged = match (if_none_match, &representation.etag) {
            (Some(list), Some(etag)) => any_etag_matches(list.as_bytes(), etag.as_bytes()),
            _ => false,
        };
        if unchanged {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            *response.headers_mut() = representation.not_modified.clone();
            return Some(response);
        }
        let body = if head {
            Body::empty()
        } else {
            Body::from(representation.body.clone())
        };
        let mut response = Response::new(body);
        *response.headers_mut() = representation.headers.clone();
        Some(response)
    }

    /// Serves a request from the static folder: Cache-Control on a file's answers, and
    /// ServeDir's own 404 for a missing one (the site's page is [`crate::pages`]'s).
    pub async fn answer(&self, request: Request) -> Response {
        if let Some(response) = self.answer_prepared(&request) {
            return response;
        }
        let cache_control = cache_control(request.uri().path());
        let Ok(mut response) = self.dir.clone().oneshot(request).await;
        if let StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED =
            response.status()
        {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, cache_control);
        }
        response.into_response()
    }
}

fn cache_control(path: &str) -> HeaderValue {
    HeaderValue::from_static(if is_fingerprinted(path) {
        IMMUTABLE
    } else {
        SHORT
    })
}

/// A snapshot file as ServeDir answers a GET for it, in each encoding it has a variant for.
struct Prepared {
    identity: Representation,
    gzip: Option<Representation>,
    br: Option<Representation>,
}

/// One encoding of a file: its bytes, and the headers ServeDir sends with them.
struct Representation {
    /// A 200's: Content-Type, Accept-Ranges, Content-Encoding, Vary, Last-Modified, ETag,
    /// Content-Length, and Cache-Control.
    headers: HeaderMap,
    /// A 304's: ETag, Last-Modified, Cache-Control.
    not_modified: HeaderMap,
    etag: Option<HeaderValue>,
    /// The snapshot's bytes (shared, not copied).
    body: Bytes,
}

/// The encodings ServeDir is configured with, in tower-http's order of preference between
/// equal q-values (the derived `Ord`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// The Accept-Encoding token for it, and the variant file's extension.
    fn token_and_extension(self) -> (&'static str, &'static str) {
        match self {
            Self::Identity => ("identity", ""),
            Self::Gzip => ("gzip", ".gz"),
            Self::Brotli => ("br", ".br"),
        }
    }
}

impl Prepared {
    /// Asks `dir` once per snapshot file and encoding, so the prepared headers are ServeDir's
    /// own. For a file in memory ServeDir's future completes at the first poll (the backend's
    /// futures are ready ones); a file whose answer would need the disk (a variant too big for
    /// the snapshot) or is not a 200 is left to ServeDir.
    fn ask(dir: &Dir, root: &Path, backend: &MemoryBackend) -> HashMap<Box<str>, Prepared> {
        let mut prepared = HashMap::new();
        for (path, file) in backend.files.iter() {
            if file.meta.is_dir {
                continue;
            }
            let Some(uri_path) = request_path(root, path) else {
                continue;
            };
            let ask = |coding| Representation::ask(dir, backend, path, &uri_path, coding);
            let (Some(Some(identity)), Some(gzip), Some(br)) = (
                ask(Coding::Identity),
                ask(Coding::Gzip),
                ask(Coding::Brotli),
            ) else {
                continue;
            };
            prepared.insert(uri_path.into_boxed_str(), Prepared { identity, gzip, br });
        }
        prepared
    }

    /// The representation ServeDir would send for this Accept-Encoding: the highest q-value
    /// among the encodings that have a variant, parsed as tower-http parses it.
    fn negotiate(&self, headers: &HeaderMap) -> &Representation {
        let mut best: Option<(u16, Coding)> = None;
        let items = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for item in items {
            let mut parts = item.splitn(2, ';');
            let name = parts.next().unwrap_or_default().trim();
            let coding = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")
            {
                Coding::Gzip
            } else if name.eq_ignore_ascii_case("br") {
                Coding::Brotli
            } else if name.eq_ignore_ascii_case("identity") {
                Coding::Identity
            } else {
                continue;
            };
            let available = match coding {
                Coding::Identity => true,
                Coding::Gzip => self.gzip.is_some(),
                Coding::Brotli => self.br.is_some(),
            };
            let q = match parts.next() {
                Some(q) => match qvalue(q.trim()) {
                    Some(q) => q,
                    None => continue,
                },
                None => 1000,
            };
            if available && q > 0 && best.is_none_or(|best| (q, coding) > best) {
                best = Some((q, coding));
            }
        }
        match best {
            Some((_, Coding::Gzip)) => self.gzip.as_ref(),
            Some((_, Coding::Brotli)) => self.br.as_ref(),
            _ => None,
        }
        .unwrap_or(&self.identity)
    }
}

impl Representation {
    /// ServeDir's answer to a GET of `uri_path` accepting only `coding`: Some(None) when the
    /// file has no variant for it, None when the file cannot be prepared.
    fn ask(
        dir: &Dir,
        backend: &MemoryBackend,
        path: &Path,
        uri_path: &str,
        coding: Coding,
    ) -> Option<Option<Self>> {
        let (token, extension) = coding.token_and_extension();
        let mut variant = path.as_os_str().to_owned();
        variant.push(extension);
        let Some(file) = backend
            .files
            .get(Path::new(&variant))
            .filter(|f| !f.meta.is_dir)
        else {
            // ServeDir looks for a variant missing from the snapshot on disk, for every
            // request. If it is not there now, the prepared answers leave it out as
            // ServeDir does; if it is (too big for the snapshot), the file is left to
            // ServeDir.
            let missing =
                std::fs::metadata(&variant).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
            return missing.then_some(None);
        };
        let mut request = Request::get(uri_path);
        if coding != Coding::Identity {
            request = request.header(header::ACCEPT_ENCODING, token);
        }
        let request = request.body(Body::empty()).ok()?;
        // The `http` crate reads `?` and `#` as the end of the path: such a name is not the
        // path a request for it would carry.
        if request.uri().path() != uri_path {
            return None;
        }
        let Ok(response) = dir.clone().oneshot(request).now_or_never()?;
        let encoding = response.headers().get(header::CONTENT_ENCODING);
        let expected = (coding != Coding::Identity).then_some(token);
        if response.status() != StatusCode::OK
            || encoding.map(HeaderValue::as_bytes) != expected.map(str::as_bytes)
        {
            return None;
        }
        let mut headers = response.headers().clone();
        headers.insert(header::CACHE_CONTROL, cache_control(uri_path));
        let etag = headers.get(header::ETAG).cloned();
        let mut not_modified = HeaderMap::new();
        for name in [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL] {
            if let Some(value) = headers.get(&name) {
                not_modified.insert(name, value.clone());
            }
        }
        Some(Some(Self {
            headers,
            not_modified,
            etag,
            body: file.bytes.clone(),
        }))
    }
}

/// The request path naming `path` under `root`, when ServeDir would map it back to that file:
/// UTF-8 names without `%` (ServeDir percent-decodes the path).
fn request_path(root: &Path, path: &Path) -> Option<String> {
    let mut uri_path = String::new();
    for component in path.strip_prefix(root).ok()?.components() {
        let Component::Normal(name) = component else {
            return None;
        };
        let name = name.to_str().filter(|name| !name.contains('%'))?;
        uri_path.push('/');
        uri_path.push_str(name);
    }
    Some(uri_path)
}

/// Whether an If-None-Match list names `etag`, by weak comparison (`W/` ignored), `*`
/// naming any: tower-http's rules, so a 304 comes for exactly the requests ServeDir would
/// answer with one.
fn any_etag_matches(list: &[u8], etag: &[u8]) -> bool {
    if list == b"*" {
        return true;
    }
    let etag = etag.strip_prefix(b"W/").unwrap_or(etag);
    // A header value holds no whitespace but spaces and tabs, which is what HTTP trims.
    let matches = |tag: &[u8]| {
        let tag = tag.trim_ascii();
        !tag.is_empty() && tag.strip_prefix(b"W/").unwrap_or(tag) == etag
    };
    let mut in_quotes = false;
    let mut start = 0;
    for (i, &byte) in list.iter().enumerate() {
        match byte {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                if matches(&list[start..i]) {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    matches(&list[start..])
}

/// An Accept-Encoding q-value in thousandths, as tower-http parses it: `q=` then 0 or 1,
/// optionally a point and decimals, at most 1; None (the item is ignored) otherwise.
fn qvalue(s: &str) -> Option<u16> {
    let mut chars = s.chars();
    if !matches!(chars.next(), Some('q' | 'Q')) || chars.next() != Some('=') {
        return None;
    }
    let mut value = match chars.next() {
        Some('0') => 0,
        Some('1') => 1000,
        _ => return None,
    };
    match chars.next() {
        Some('.') => {}
        None => return Some(value),
        _ => return None,
    }
    let mut factor = 100;
    for c in chars {
        let digit = c.to_digit(10)?;
        if factor < 1 {
            return None;
        }
        value += factor * digit as u16;
        factor /= 10;
    }
    (value <= 1000).then_some(value)
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
    bytes: Bytes,
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
                    let bytes = if meta.is_dir() {
                        Bytes::new()
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
    Memory(Cursor<Bytes>, FileMeta),
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
    use std::path::Path;

    use super::{StaticFiles, is_fingerprinted};

    #[test]
    fn the_snapshot_is_prepared_with_each_files_variants() {
        // Relative, as `static_dir` may be (tests run in webapp/).
        let files = StaticFiles::new(Path::new("static"), 256 * 1024);
        let css = &files.prepared[crate::pages::STYLESHEET];
        assert!(css.gzip.is_some() && css.br.is_some());
        let robots = &files.prepared["/robots.txt"];
        assert!(robots.gzip.is_none() && robots.br.is_none());
        assert!(
            files
                .prepared
                .contains_key(format!("{}.gz", crate::pages::STYLESHEET).as_str())
        );
        // With the cache off, ServeDir answers everything from disk.
        assert!(StaticFiles::new(Path::new("static"), 0).prepared.is_empty());
    }

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
