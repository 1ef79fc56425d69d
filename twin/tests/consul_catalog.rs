//! The catalog as documented (DOC api-docs/catalog.mdx; SRC agent/consul/catalog_endpoint.go
//! `Register`, state/catalog.go `ensureRegistrationTxn`): datacenters, `SkipNodeUpdate`,
//! `TaggedAddresses`, and the exact refusals of a registration that lacks what it needs.
#![allow(clippy::unwrap_used, clippy::panic)]

mod consul_support;

use consul_support::{Api, fixture};
use hashistack_twin::TwinConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn datacenters_lists_the_twins_one_datacenter_without_needing_a_token() {
    let api = Api::with(TwinConfig {
        acl_token: Some("root".into()),
        ..TwinConfig::default()
    })
    .await;
    let a = api.call("GET", "/v1/catalog/datacenters", None).await;
    assert_eq!(a.status, StatusCode::OK, "anonymous may list datacenters");
    assert_eq!(a.json(), json!(["dc1"]));
    api.twin.shutdown().await;
}

#[tokio::test]
async fn the_documented_registration_keeps_its_tagged_addresses_everywhere_it_is_read() {
    let api = Api::start().await;
    let (s, _) = api
        .json(
            "PUT",
            "/v1/catalog/register",
            Some(fixture("catalog-register-request.json")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, rows) = api.json("GET", "/v1/catalog/service/redis", None).await;
    let row = &rows[0];
    assert_eq!(row["ID"], "40e4a748-2192-161a-0510-9bf59fe950b5");
    assert_eq!(
        row["TaggedAddresses"],
        json!({"lan": "192.168.10.10", "wan": "10.0.10.10"})
    );
    assert_eq!(
        row["ServiceTaggedAddresses"],
        json!({"lan": {"address": "127.0.0.1", "port": 8000}, "wan": {"address": "198.18.0.1", "port": 80}})
    );
    assert_eq!(row["NodeMeta"], json!({"somekey": "somevalue"}));
    let (_, health) = api.json("GET", "/v1/health/service/redis", None).await;
    assert_eq!(health[0]["Node"]["TaggedAddresses"]["wan"], "10.0.10.10");
    assert_eq!(health[0]["Service"]["TaggedAddresses"]["wan"]["port"], 80);
    let check = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "service:redis1")
        .unwrap()
        .clone();
    assert_eq!(check["Type"], "tcp", "the Definition names a TCP check");
    assert_eq!(check["Interval"], "5s");
    let (_, nodes) = api.json("GET", "/v1/catalog/nodes", None).await;
    let node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "t2.320")
        .unwrap();
    assert_eq!(node["TaggedAddresses"]["lan"], "192.168.10.10");
    api.twin.shutdown().await;
}

#[tokio::test]
async fn skip_node_update_leaves_the_node_as_registered() {
    let api = Api::start().await;
    let node = json!({"Node": "n1", "Address": "10.0.0.1",
        "TaggedAddresses": {"lan": "10.0.0.1"}, "NodeMeta": {"rack": "r1"}});
    api.json("PUT", "/v1/catalog/register", Some(node)).await;
    let (_, before) = api.json("GET", "/v1/catalog/nodes", None).await;
    let before = before
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "n1")
        .unwrap()
        .clone();
    let (s, _) = api
        .json(
            "PUT",
            "/v1/catalog/register",
            Some(json!({"Node": "n1", "SkipNodeUpdate": true,
                "Service": {"Service": "api", "Port": 9000}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "no address needed with SkipNodeUpdate");
    let (_, after) = api.json("GET", "/v1/catalog/nodes", None).await;
    let after = after
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "n1")
        .unwrap()
        .clone();
    assert_eq!(
        after, before,
        "address, tagged addresses, meta and ModifyIndex are kept"
    );
    let (_, rows) = api.json("GET", "/v1/catalog/service/api", None).await;
    assert_eq!(
        (rows[0]["Address"].as_str(), rows[0]["ServiceID"].as_str()),
        (Some("10.0.0.1"), Some("api"))
    );

    // Without SkipNodeUpdate the same body is refused.
    let a = api
        .call(
            "PUT",
            "/v1/catalog/register",
            Some(br#"{"Node": "n1", "Service": {"Service": "api"}}"#),
        )
        .await;
    assert_eq!(
        (a.status, a.text.as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Must provide address if SkipNodeUpdate is not set"
        )
    );
    api.twin.shutdown().await;
}

#[tokio::test]
async fn registrations_missing_what_they_need_are_refused_with_consuls_texts_and_apply_nothing() {
    let api = Api::start().await;
    let refused = |path: &'static str, body: Value| {
        let api = &api;
        async move {
            let a = api
                .call("PUT", path, Some(body.to_string().as_bytes()))
                .await;
            (a.status, a.text)
        }
    };
    let err = |t: &str| (StatusCode::INTERNAL_SERVER_ERROR, t.to_string());
    assert_eq!(
        refused("/v1/catalog/register", json!({"Address": "10.0.0.1"})).await,
        err("Must provide node")
    );
    assert_eq!(
        refused("/v1/catalog/register", json!({"Node": "n1"})).await,
        err("Must provide address if SkipNodeUpdate is not set")
    );
    assert_eq!(
        refused(
            "/v1/catalog/register",
            json!({"Node": "n1", "Address": "a", "ID": "node-1"})
        )
        .await,
        err("Bad node ID: uuid string is wrong length")
    );
    assert_eq!(
        refused(
            "/v1/catalog/register",
            json!({"Node": "n1", "Address": "a", "ID": "40e4a748x2192-161a-0510-9bf59fe950b5"})
        )
        .await,
        err("Bad node ID: uuid is improperly formatted")
    );
    assert_eq!(
        refused(
            "/v1/catalog/register",
            json!({"Node": "n1", "Address": "a", "Service": {"ID": "web-1"}})
        )
        .await,
        err("Must provide service name with ID")
    );
    assert_eq!(
        refused(
            "/v1/catalog/register",
            json!({"Node": "n1", "Address": "a", "Service": {"Service": "web", "Address": "0.0.0.0"}})
        )
        .await,
        err("Invalid service address")
    );
    assert_eq!(
        refused(
            "/v1/catalog/register",
            json!({"Node": "n1", "Address": "a", "Check": {"Name": "c", "ServiceID": "ghost"}})
        )
        .await,
        err("failed inserting check: Missing service registration")
    );
    assert_eq!(
        refused(
            "/v1/catalog/register",
            json!({"Node": "n1", "Address": "a", "Check": {"Name": "c", "Node": "elsewhere"}})
        )
        .await,
        err("failed inserting check: Missing node registration")
    );
    assert_eq!(
        refused("/v1/catalog/deregister", json!({"ServiceID": "x"})).await,
        err("Must provide node")
    );
    let a = api
        .call("PUT", "/v1/catalog/register", Some(b"{nope"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text.starts_with("Request decode failed: "), "{}", a.text);
    let (_, nodes) = api.json("GET", "/v1/catalog/nodes", None).await;
    assert_eq!(
        nodes.as_array().unwrap().len(),
        1,
        "no refused registration left a node: {nodes}"
    );
    api.twin.shutdown().await;
}
