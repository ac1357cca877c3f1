//! The site's HTML pages, rendered on the server with askama (templates in
//! `webapp/templates`, checked at compile time, every value HTML-escaped).
//!
//! The guestbook works without JavaScript: a plain form posts to `/guestbook`; a good post is
//! answered with 303 See Other to the page that shows it (post/redirect/get, so reloading
//! does not post twice), a bad one with 422 and the form again, its values kept and each
//! problem named. Each rendered form carries a fresh idempotency key in a hidden field
//! ([`crate::idempotency`]), so a double click, or the same form sent again after an error,
//! stores one post; a form rendered again after a POST keeps the key it was sent with. When the database cannot be reached the guestbook answers 503 with a human
//! message, while the home page still renders (200) and says the guestbook is resting.

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::config::GuestbookConfig;
use crate::idempotency::IdempotencyKey;
use crate::posts::{self, Created, FieldError, Page, Submission};
use crate::state::AppState;

/// The site's stylesheet. Its name carries the first 8 hex digits of its SHA-256, so it can be
/// cached for a year; the `stylesheet_name_matches_its_content` test fails when an edit
/// forgets to rename it.
pub const STYLESHEET: &str = "/assets/site.e19f3c83.css";

/// What the footer of every page says about where it came from.
pub struct Frame {
    pub web: String,
    pub database: DbNote,
}

/// Whether this page read from the database, and where.
pub enum DbNote {
    Read(String),
    Down,
    None,
}

impl Frame {
    fn new(state: &AppState, database: DbNote) -> Self {
        Self {
            web: state.instance.to_string(),
            database,
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    frame: Frame,
    latest: Option<Page>,
}

#[derive(Template)]
#[template(path = "guestbook.html")]
struct GuestbookPage<'a> {
    frame: Frame,
    limits: &'a GuestbookConfig,
    page: Option<Page>,
    before: Option<u64>,
    posted: Option<u64>,
    errors: Vec<FieldError>,
    form: FormValues,
}

/// What the guestbook form shows in its fields.
struct FormValues {
    name: String,
    message: String,
    /// The hidden field: the key the next submit of this form is stored under.
    key: IdempotencyKey,
}

impl FormValues {
    /// An empty form with a key of its own.
    fn blank() -> Self {
        Self {
            name: String::new(),
            message: String::new(),
            key: IdempotencyKey::fresh(),
        }
    }
}

/// The guestbook form's fields, as posted.
#[derive(Debug, Default, Deserialize)]
pub struct GuestbookForm {
    name: Option<String>,
    message: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    frame: Frame,
    title: String,
    message: String,
}

/// `?before=ID` pages back through older posts; `?posted=ID` thanks the author of post ID.
#[derive(Debug, Default, Deserialize)]
pub struct GuestbookQuery {
    before: Option<u64>,
    posted: Option<u64>,
}

/// How many posts the home page shows.
const HOME_POSTS: u32 = 3;

/// `GET /`: the stack explained, and the latest posts when the database answers.
pub async fn home(State(state): State<AppState>) -> Response {
    let latest = state
        .db
        .read(|mut conn| async move { posts::latest(&mut conn, None, HOME_POSTS).await })
        .await
        .ok();
    let database = match &latest {
        Some(page) => DbNote::Read(page.node.clone()),
        None => DbNote::Down,
    };
    render(
        StatusCode::OK,
        &HomePage {
            frame: Frame::new(&state, database),
            latest,
        },
    )
}

/// `GET /guestbook`: the form and a page of posts.
pub async fn guestbook(
    State(state): State<AppState>,
    query: Result<Query<GuestbookQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The address has a parameter this page does not understand: `before` and \
             `posted` must be post numbers.",
        );
    };
    let page = read_page(&state, query.before).await;
    let status = if page.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    guestbook_page(
        &state,
        status,
        page,
        query.before,
        query.posted,
        Vec::new(),
        FormValues::blank(),
    )
}

/// `POST /guestbook`: store a post from the form, then redirect to the page that shows it.
/// The post's idempotency key is the `Idempotency-Key` header if there is one, else the
/// form's hidden field; a form without either (an old page) is stored without a key.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<GuestbookForm>, FormRejection>,
) -> Response {
    let unreadable = |status: StatusCode, why: &str| {
        error_page(
            &state,
            status,
            "Bad request",
            &format!("The form could not be read: {why}"),
        )
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return unreadable(rejection.status(), &rejection.body_text()),
    };
    let key = match IdempotencyKey::from_headers(&headers) {
        Ok(Some(key)) => Some(key),
        Ok(None) => match form.idempotency_key.as_deref().map(IdempotencyKey::parse) {
            Some(Ok(key)) => Some(key),
            Some(Err(why)) => return unreadable(StatusCode::BAD_REQUEST, &why),
            None => None,
        },
        Err(why) => return unreadable(StatusCode::BAD_REQUEST, &why),
    };
    let submission = Submission {
        name: form.name,
        message: form.message,
    };
    // Shown again after a failure: what was typed, and the same key, since the post may have
    // been stored after all (only a key that is spent is replaced).
    let again = |key: Option<IdempotencyKey>| FormValues {
        name: submission.name.clone().unwrap_or_default(),
        message: submission.message.clone().unwrap_or_default(),
        key: key.unwrap_or_else(IdempotencyKey::fresh),
    };
    let post = match posts::validate(&submission, &state.guestbook) {
        Ok(post) => post,
        Err(errors) => {
            let page = read_page(&state, None).await;
            return guestbook_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                page,
                None,
                None,
                errors,
                again(key),
            );
        }
    };
    let created = posts::save(&state.db, &post, key.as_ref()).await;
    match created {
        Ok(Created::New { post, .. } | Created::Repeated { post, .. }) => {
            let id = post.id;
            Redirect::to(&format!("/guestbook?posted={id}#post-{id}")).into_response()
        }
        Ok(Created::KeyReused { id }) => {
            let page = read_page(&state, None).await;
            let error = FieldError {
                field: "form",
                message: format!(
                    "this form was already used for post #{id}, which says something else; \
                     press Post again to save this text as a new post"
                ),
            };
            guestbook_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                page,
                None,
                None,
                vec![error],
                again(None),
            )
        }
        Err(_) => guestbook_page(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            None,
            None,
            Vec::new(),
            again(key),
        ),
    }
}

/// Serves a request from the static folder ([`crate::statics`]); not found becomes the site's
/// 404 page.
pub async fn static_file(State(state): State<AppState>, request: Request) -> Response {
    let response = state.files.answer(request).await;
    if response.status() == StatusCode::NOT_FOUND {
        return not_found(&state);
    }
    response
}

/// The site's 404 page, for any path that is neither a route nor a static file.
pub fn not_found(state: &AppState) -> Response {
    error_page(
        state,
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address. It may have moved, or the link may be mistyped.",
    )
}

/// A page of posts, or None when the database could not give one (logged and counted by
/// [`crate::db::Database::read`]).
async fn read_page(state: &AppState, before: Option<u64>) -> Option<Page> {
    let limit = state.guestbook.page_size;
    state
        .db
        .read(|mut conn| async move { posts::latest(&mut conn, before, limit).await })
        .await
        .ok()
}

fn guestbook_page(
    state: &AppState,
    status: StatusCode,
    page: Option<Page>,
    before: Option<u64>,
    posted: Option<u64>,
    errors: Vec<FieldError>,
    form: FormValues,
) -> Response {
    let database = match &page {
        Some(page) => DbNote::Read(page.node.clone()),
        None => DbNote::Down,
    };
    render(
        status,
        &GuestbookPage {
            frame: Frame::new(state, database),
            limits: &state.guestbook,
            page,
            before,
            posted,
            errors,
            form,
        },
    )
}

fn error_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        &ErrorPage {
            frame: Frame::new(state, DbNote::None),
            title: title.to_owned(),
            message: message.to_owned(),
        },
    )
}

/// A rendered page with its status. Pages change with every post, so caches must revalidate.
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            response
        }
        Err(e) => {
            tracing::error!("cannot render a page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
