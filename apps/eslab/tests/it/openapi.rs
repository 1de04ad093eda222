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

/// The responses that create an account or a transfer link to the operations
/// that take its id (OpenAPI links, which schemathesis's stateful phase
/// follows); each link names an operation of the document whose path takes
/// `{id}`, and following it with the created id finds the resource.
#[tokio::test]
async fn created_resources_link_to_the_operations_on_their_id() {
    let app = TestApp::spawn(Backend::Memory).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut operations = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(id) = operation["operationId"].as_str() {
                operations.insert(id.to_owned(), (method.clone(), path.clone()));
            }
        }
    }
    let links = |path: &str, status: &str| -> Vec<(String, String, String)> {
        let links = doc["paths"][path]["post"]["responses"][status]["links"].as_object().cloned().unwrap_or_default();
        links
            .values()
            .map(|link| {
                assert_eq!(link["parameters"]["id"], "$response.body#/id", "{link}");
                let id = link["operationId"].as_str().unwrap();
                let (method, target) =
                    operations.get(id).unwrap_or_else(|| panic!("{path} {status} links to unknown {id}"));
                assert!(target.contains("{id}"), "{id}: {target}");
                (id.to_owned(), method.clone(), target.clone())
            })
            .collect()
    };
    let account = links("/accounts", "201");
    let names: BTreeSet<_> = account.iter().map(|(id, ..)| id.as_str()).collect();
    let expected = ["account_events", "account_state", "close", "deposit", "forget_owner", "get_account", "withdraw"];
    assert_eq!(names, expected.into_iter().collect(), "every operation on an account's id");
    let transfer: Vec<_> = links("/transfers", "202").into_iter().map(|(id, ..)| id).collect();
    assert_eq!(transfer, ["get_transfer"]);
    assert_eq!(links("/transfers", "201").len(), 1);

    // Following the reads with the id an opening returned finds the account
    // (the summary with strong consistency: it waits for its read model).
    let opened: Value =
        app.post_json("/accounts", serde_json::json!({"owner": "Ada", "currency": "EUR"})).await.json().await.unwrap();
    let id = opened["id"].as_str().unwrap();
    for (operation, method, path) in &account {
        if method == "get" {
            let query = if operation == "get_account" { "?consistency=strong" } else { "" };
            let r = app.get(&format!("{}{query}", path.replace("{id}", id))).await;
            assert_eq!(r.status(), StatusCode::OK, "{operation} {path}");
        }
    }
    app.stop().await;
}
