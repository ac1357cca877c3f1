//! The guestbook's JSON API: `GET /api/posts`, `POST /api/posts`, `GET /api/posts/{id}`.
//!
//! Every answer is JSON, errors included: `{"error": "..."}`, plus `"fields"` (which field,
//! and why) on a 422. Reads say which web server and which database node served them, like
//! the pages' footers. `POST` honours an `Idempotency-Key` header ([`crate::idempotency`]).
//! When the database cannot be reached the answer is 503 with `Retry-After`, never a hung
//! request: every wait is bounded (`database.acquire_timeout`, `connect_timeout`,
//! `read_timeout`, `query_timeout`, per database URL tried; see [`crate::db`]).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::DbError;
use crate::idempotency::IdempotencyKey;
use crate::posts::{self, Created, Post, Submission};
use crate::state::AppState;

/// `?before=ID&limit=N`: the newest `limit` posts older than post `before`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

/// Most posts one request may ask for.
const MAX_LIMIT: u32 = 100;

#[derive(Serialize)]
struct ServedBy<'a> {
    web: &'a str,
    database: &'a str,
}

#[derive(Serialize)]
struct PostList<'a> {
    posts: &'a [Post],
    /// The URL of the next (older) page, or null on the last one.
    older: Option<String>,
    served_by: ServedBy<'a>,
}

#[derive(Serialize)]
struct OnePost<'a> {
    post: &'a Post,
    served_by: ServedBy<'a>,
}

/// `GET /api/posts`
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let limit = query.limit.unwrap_or(state.guestbook.page_size);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("limit must be 1 to {MAX_LIMIT}"),
        );
    }
    let before = query.before;
    let page = match state
        .db
        .read(|mut conn| async move { posts::latest(&mut conn, before, limit).await })
        .await
    {
        Ok(page) => page,
        Err(e) => return unavailable(&e),
    };
    let older = page
        .older_cursor()
        .map(|cursor| format!("/api/posts?before={cursor}&limit={limit}"));
    json_response(
        StatusCode::OK,
        &PostList {
            posts: &page.posts,
            older,
            served_by: ServedBy {
                web: &state.instance,
                database: &page.node,
            },
        },
    )
}

/// `GET /api/posts/{id}`
pub async fn get(State(state): State<AppState>, id: Result<Path<u64>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(_) => return error(StatusCode::BAD_REQUEST, "a post id is a positive number"),
    };
    match state
        .db
        .read(|mut conn| async move { posts::find(&mut conn, id).await })
        .await
    {
        Ok((Some(post), node)) => json_response(
            StatusCode::OK,
            &OnePost {
                post: &post,
                served_by: ServedBy {
                    web: &state.instance,
                    database: &node,
                },
            },
        ),
        Ok((None, _)) => error(StatusCode::NOT_FOUND, &format!("there is no post {id}")),
        Err(e) => unavailable(&e),
    }
}

/// `POST /api/posts` with `{"name": "...", "message": "..."}`: 201 with the stored post and
/// its `Location`. With an `Idempotency-Key` header, a repeat of the request (same key, same
/// post) stores nothing and gets the same answer, marked `Idempotent-Replayed: true`; the
/// key with another post is 422; a malformed key is 400.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Submission>, JsonRejection>,
) -> Response {
    let key = match IdempotencyKey::from_headers(&headers) {
        Ok(key) => key,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let submission = match body {
        Ok(Json(submission)) => submission,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let post = match posts::validate(&submission, &state.guestbook) {
        Ok(post) => post,
        Err(fields) => {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "error": "the post was not saved", "fields": fields }),
            );
        }
    };
    let created = posts::save(&state.db, &post, key.as_ref()).await;
    let (post, node, repeated) = match created {
        Ok(Created::New { post, node }) => (post, node, false),
        Ok(Created::Repeated { post, node }) => (post, node, true),
        Ok(Created::KeyReused { id }) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "this Idempotency-Key was already used for post {id}, with another name or \
                     message; use a new key for a new post"
                ),
            );
        }
        Err(e) => return unavailable(&e),
    };
    let mut response = json_response(
        StatusCode::CREATED,
        &OnePost {
            post: &post,
            served_by: ServedBy {
                web: &state.instance,
                database: &node,
            },
        },
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/api/posts/{}", post.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if repeated {
        response.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// Any other path under `/api/`.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such API endpoint")
}

fn unavailable(e: &DbError) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({ "error": "the database is unavailable; try again shortly", "detail": e.to_string() }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
