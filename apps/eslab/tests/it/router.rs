//! The router without a socket (`oneshot`), on the memory store.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use eslab::serve::{self, Config};
use eslab_runtime::AnyStore;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn call(state: &serve::AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = serve::app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn the_router_works_without_a_socket() {
    let config = Config::new("memory:");
    let prepared = serve::prepare(AnyStore::open("memory:").await.unwrap(), &config).await.unwrap();
    let state = prepared.state.clone();
    let (status, body) =
        call(&state, post("/accounts", r#"{"owner": "Ada", "currency": "EUR", "overdraft_limit": 50}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) =
        call(&state, post(&format!("/accounts/{id}/withdrawals"), r#"{"amount": 50, "currency": "EUR"}"#)).await;
    assert_eq!((status, body["balance"].as_i64()), (StatusCode::OK, Some(-50)));
    let (status, body) =
        call(&state, post(&format!("/accounts/{id}/withdrawals"), r#"{"amount": 1, "currency": "EUR"}"#)).await;
    assert_eq!((status, body["rule"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient-funds")));
    let (status, body) =
        call(&state, Request::get(format!("/accounts/{id}?consistency=strong")).body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["balance"].as_i64()), (StatusCode::OK, Some(-50)));
    let (status, _) = call(&state, Request::get("/accounts?limit=0").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(&state, Request::delete("/accounts").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["status"].as_u64()), (StatusCode::METHOD_NOT_ALLOWED, Some(405)), "405 is a problem too");
    prepared.stop().await.unwrap();
}
