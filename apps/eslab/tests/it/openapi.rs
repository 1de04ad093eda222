//! The OpenAPI document served at `/openapi.json` says where each parameter
//! goes: path parameters are the path template's (and required), every other
//! parameter of the paged and filtered reads is an optional query parameter.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

#[tokio::test]
async fn openapi_parameters_are_where_the_service_reads_them() {
    let app = TestApp::spawn(Backend::Memory).await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    let mut query = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let mut in_path = BTreeSet::new();
            for p in &parameters {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => {
                        assert!(path.contains(&format!("{{{name}}}")), "{at}: {name} is no part of the path");
                        assert_eq!(p["required"], true, "{at}: path parameter {name}");
                        in_path.insert(name.to_owned());
                    }
                    "query" => {
                        assert_ne!(p["required"], true, "{at}: query parameter {name} is optional");
                        query.insert(format!("{at} {name}"));
                    }
                    "header" => assert_ne!(p["required"], true, "{at}: header {name} is optional"),
                    other => panic!("{at}: {name} is in {other}"),
                }
            }
            let template: BTreeSet<_> =
                path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(name, _)| name.to_owned()).collect();
            assert_eq!(in_path, template, "{at}: the path parameters are the template's");
        }
    }
    let expected = [
        "get /accounts after",
        "get /accounts limit",
        "get /accounts/{id} consistency",
        "get /accounts/{id}/events from",
        "get /accounts/{id}/events limit",
        "get /accounts/{id}/state version",
        "get /events/stream after",
        "get /events/stream category",
        "get /events/stream type",
    ];
    assert_eq!(query, expected.iter().map(|s| (*s).to_owned()).collect(), "every query parameter, in the query");
    let owner = &doc["components"]["schemas"]["OpenAccount"]["properties"]["owner"];
    assert_eq!(owner["maxLength"], eslab_bank::MAX_OWNER_CHARS, "{owner}");
    app.stop().await;
}
