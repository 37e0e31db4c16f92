//! The committed OpenAPI document against the real server: it is served,
//! every documented operation reaches a handler, undocumented methods are
//! 405, and the statuses the bad-input table produces are documented.

use serde_json::Value;

use crate::bad_input;
use crate::support::*;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn committed_yaml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml"))
        .expect("the committed spec")
}

fn spec() -> Value {
    serde_yaml_ng::from_str(&committed_yaml()).expect("the spec is YAML")
}

/// The documented path template `path` (without its query) falls under.
/// Literal segments win over templated ones, as in the router.
fn template_of<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(&str, usize)> = None;
    for template in spec["paths"].as_object().unwrap().keys() {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let fits = parts
            .iter()
            .zip(&segments)
            .all(|(p, s)| p == s || p.starts_with('{'));
        let literals = parts.iter().filter(|p| !p.starts_with('{')).count();
        if fits && best.is_none_or(|(_, n)| literals > n) {
            best = Some((template, literals));
        }
    }
    best.map(|(t, _)| t)
}

fn documented_statuses(spec: &Value, template: &str, method: &str) -> Vec<u16> {
    spec["paths"][template][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {template} has no responses"))
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_spec_is_served_as_yaml_and_json_without_auth() {
    let server = Server::start().await;
    let response = server
        .http
        .get(server.url("/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    assert_eq!(response.text().await.unwrap(), committed_yaml());

    let response = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, spec(), "the JSON is the committed YAML");
    server.stop().await;
}

#[tokio::test]
async fn every_documented_operation_reaches_its_handler() {
    let server = Server::start().await;
    let spec = spec();
    let job = server.submit(OLGA_OPS, "status = 418").await;
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    let offset = job["offset"].to_string();
    let example =
        spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["value"]
            .clone();
    let mut operations = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        let path = template
            .replace("{jobId}", &job_id)
            .replace("{offset}", &offset);
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            operations += 1;
            let mut request = server
                .http
                .request(method.to_uppercase().parse().unwrap(), server.url(&path))
                .bearer_auth(OLGA_OPS);
            if *method == "post" {
                request = request.json(&example);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let documented = documented_statuses(&spec, template, method);
            if response.headers()["content-type"] == "text/event-stream" {
                // A push stream: an offset's stays open for its next job,
                // so its body is not read to the end here (tests/it/push.rs).
                assert!(documented.contains(&status), "{method} {template}");
                continue;
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let what = format!("{method} {template}: {status} {body}");
            if documented.contains(&101) {
                // A WebSocket route reached without an upgrade.
                assert_eq!(status, 426, "{what}");
                continue;
            }
            for fallback in ["not-found", "method-not-allowed"] {
                assert_ne!(
                    body["type"],
                    format!("https://pseudostream.dev/problems/{fallback}"),
                    "{what}"
                );
            }
            assert!(status < 300, "{what}");
            assert!(
                documented.contains(&status),
                "{what}: status not documented"
            );
        }
    }
    assert!(operations >= 12, "only {operations} operations documented");
    server.stop().await;
}

#[tokio::test]
async fn undocumented_methods_on_documented_paths_are_405() {
    let server = Server::start().await;
    let spec = spec();
    let id = "01890000-0000-7000-8000-000000000000";
    for (template, item) in spec["paths"].as_object().unwrap() {
        let path = template.replace("{jobId}", id).replace("{offset}", "0");
        let allowed: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| item.get(*m).is_some())
            .collect();
        for method in METHODS.iter().filter(|m| !allowed.contains(m)) {
            let response = server
                .http
                .request(method.to_uppercase().parse().unwrap(), server.url(&path))
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            let what = format!("{method} {template}");
            assert_eq!(response.status(), 405, "{what}");
            let allow = response.headers()["allow"].to_str().unwrap().to_lowercase();
            for m in &allowed {
                assert!(allow.contains(m), "{what}: Allow: {allow}");
            }
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body["type"], "https://pseudostream.dev/problems/method-not-allowed",
                "{what}"
            );
        }
    }
    server.stop().await;
}

#[test]
fn every_status_of_the_bad_input_table_is_documented() {
    let spec = spec();
    for case in bad_input::cases() {
        let method = case.method.to_lowercase();
        match template_of(&spec, case.path) {
            None => assert_eq!(
                (case.status, case.problem),
                (404, "not-found"),
                "{}: an undocumented path must fall through",
                case.name
            ),
            Some(template) if spec["paths"][template].get(&method).is_none() => assert_eq!(
                (case.status, case.problem),
                (405, "method-not-allowed"),
                "{}",
                case.name
            ),
            Some(template) => assert!(
                documented_statuses(&spec, template, &method).contains(&case.status),
                "{}: {} {template} answers {} but documents only {:?}",
                case.name,
                case.method,
                case.status,
                documented_statuses(&spec, template, &method)
            ),
        }
    }
}

/// A JSON object's keys in the order its text has them (`Value` sorts them).
struct KeyOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeyOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyOrder, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeyOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeyOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(KeyOrder(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// The first row's field names, in order, of a job's first chunk, as the
/// submission's `?wait=` answer and as a chunk read have them.
async fn first_row_fields(server: &Server, fields: Option<&[String]>) -> Vec<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Accepted {
        job_id: String,
        first_chunk: ChunkRows,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        chunks: Vec<ChunkRows>,
    }
    #[derive(serde::Deserialize)]
    struct ChunkRows {
        rows: Vec<KeyOrder>,
    }
    let text = |request: reqwest::RequestBuilder| async move {
        let response = request.bearer_auth(ALICE).send().await.unwrap();
        response.text().await.unwrap()
    };
    let mut body = serde_json::json!({ "filter": "", "timeRange": { "last": "7d" } });
    if let Some(fields) = fields {
        body["fields"] = serde_json::json!(fields);
    }
    let submit = server.http.post(server.url("/v1/jobs?wait=5")).json(&body);
    let accepted: Accepted = serde_json::from_str(&text(submit).await).unwrap();
    let path = format!("/v1/jobs/{}/chunks?from=0&limit=1", accepted.job_id);
    let page: Page = serde_json::from_str(&text(server.http.get(server.url(&path))).await).unwrap();
    let read = page.chunks[0].rows[0].0.clone();
    assert_eq!(accepted.first_chunk.rows[0].0, read, "the ?wait= answer");
    read
}

#[tokio::test]
async fn rows_keep_the_field_order_the_readme_and_the_spec_show() {
    let spec = spec();
    let example: Vec<String> = serde_json::from_value(
        spec["components"]["schemas"]["SubmitRequest"]["properties"]["fields"]["examples"][0]
            .clone(),
    )
    .expect("the spec shows a `fields` example");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let quoted: Vec<String> = example.iter().map(|f| format!("{f:?}")).collect();
    let written = format!("\"fields\": [{}]", quoted.join(", "));
    assert!(readme.contains(&written), "the README shows {written}");

    let server = Server::start().await;
    assert_eq!(first_row_fields(&server, Some(&example)).await, example);
    let reversed: Vec<String> = example.iter().rev().cloned().collect();
    assert_eq!(first_row_fields(&server, Some(&reversed)).await, reversed);
    let source = open_parquet(dataset().to_str().unwrap(), "ts").await;
    use pseudostream::source::QuerySource;
    let columns: Vec<String> = source.schema().field_names().map(str::to_owned).collect();
    assert_eq!(
        first_row_fields(&server, None).await,
        columns,
        "the source's column order"
    );
    server.stop().await;
}
