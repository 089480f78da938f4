//! The twelve read-only health tools, with Biotrackr's names and arguments.
//!
//! Three tool shapes (one day, a date range, all records) times four domains. Each shape has one
//! generic helper taking the domain; the twelve `#[tool]` methods only name, describe and route.
//! Bad input and upstream failures come back as a tool result with `is_error: true` and the text
//! `{"error": "..."}`, which the model can read; they never become protocol errors.

use std::sync::Arc;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_input;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::health_api::{Date, Domain, HealthApi, HealthApiError, Page};

/// The header keyward sets to the authenticated client's id.
const CLIENT_HEADER: &str = "x-keyward-client";
const DEFAULT_PAGE_NUMBER: i64 = 1;
const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 50;
/// C#'s `int.MaxValue`, Biotrackr's own bound.
const MAX_PAGE_NUMBER: i64 = i32::MAX as i64;

/// Arguments of `get_{domain}_by_date`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ByDateArgs {
    /// The day to fetch, as yyyy-MM-dd (for example 2025-02-02).
    #[schemars(pattern(r"^\d{4}-\d{2}-\d{2}$"))]
    date: String,
}

/// Arguments of `get_{domain}_by_date_range`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DateRangeArgs {
    /// First day of the range, inclusive, as yyyy-MM-dd.
    #[schemars(pattern(r"^\d{4}-\d{2}-\d{2}$"))]
    start_date: String,
    /// Last day of the range, inclusive, as yyyy-MM-dd; not before startDate.
    #[schemars(pattern(r"^\d{4}-\d{2}-\d{2}$"))]
    end_date: String,
    /// 1-based page number (default 1).
    #[serde(default = "default_page_number")]
    #[schemars(range(min = 1))]
    page_number: i64,
    /// Records per page (default 20); values outside 1..50 are clamped.
    #[serde(default = "default_page_size")]
    page_size: i64,
}

/// Arguments of `get_{domain}_records`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordsArgs {
    /// 1-based page number (default 1).
    #[serde(default = "default_page_number")]
    #[schemars(range(min = 1))]
    page_number: i64,
    /// Records per page (default 20); values outside 1..50 are clamped.
    #[serde(default = "default_page_size")]
    page_size: i64,
}

fn default_page_number() -> i64 {
    DEFAULT_PAGE_NUMBER
}

fn default_page_size() -> i64 {
    DEFAULT_PAGE_SIZE
}

/// A tool call that produced no record. Its `Display` is what the model reads.
#[derive(Debug, thiserror::Error)]
enum ToolError {
    /// The caller's arguments; the message names the argument and the rule.
    #[error("{0}")]
    Invalid(String),
    /// The API has no record for that day.
    #[error("no {domain} record for {date}")]
    NotFound { domain: Domain, date: Date },
    #[error(transparent)]
    Upstream(#[from] HealthApiError),
}

/// The MCP server: a health-data API client and the tool table, both shared across requests.
#[derive(Debug, Clone)]
pub(crate) struct HealthTools {
    api: HealthApi,
    tool_router: Arc<ToolRouter<Self>>,
}

/// The input schema of a tool, from its argument type.
fn input_schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|e| panic!("argument schema is invalid: {e}"))
}

#[tool_router]
impl HealthTools {
    /// A factory for rmcp's HTTP service, which asks for a handler per request: the tool table
    /// is built once here and shared.
    pub(crate) fn factory(api: HealthApi) -> impl Fn() -> std::io::Result<Self> + Send + Sync {
        let tool_router = Arc::new(Self::tool_router());
        move || Ok(Self { api: api.clone(), tool_router: Arc::clone(&tool_router) })
    }

    #[tool(
        description = "Get the Fitbit activity summary for one day: steps, distances, calories, \
                       active minutes, floors and heart-rate zones.",
        input_schema = input_schema::<ByDateArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_activity_by_date(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date(Domain::Activity, &ctx, args).await
    }

    #[tool(
        description = "Get Fitbit activity summaries for a date range (inclusive), one page at a \
                       time.",
        input_schema = input_schema::<DateRangeArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_activity_by_date_range(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date_range(Domain::Activity, &ctx, args).await
    }

    #[tool(
        description = "List all Fitbit activity records, newest first, one page at a time.",
        input_schema = input_schema::<RecordsArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_activity_records(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.records(Domain::Activity, &ctx, args).await
    }

    #[tool(
        description = "Get the Fitbit sleep log for one day: sleep stages (deep, light, REM, \
                       wake), efficiency, time asleep and time in bed.",
        input_schema = input_schema::<ByDateArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_sleep_by_date(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date(Domain::Sleep, &ctx, args).await
    }

    #[tool(
        description = "Get Fitbit sleep logs for a date range (inclusive), one page at a time.",
        input_schema = input_schema::<DateRangeArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_sleep_by_date_range(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date_range(Domain::Sleep, &ctx, args).await
    }

    #[tool(
        description = "List all Fitbit sleep records, newest first, one page at a time.",
        input_schema = input_schema::<RecordsArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_sleep_records(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.records(Domain::Sleep, &ctx, args).await
    }

    #[tool(
        description = "Get the Fitbit food log for one day: logged foods with their nutritional \
                       values, the day's totals and the calorie goal.",
        input_schema = input_schema::<ByDateArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_food_by_date(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date(Domain::Food, &ctx, args).await
    }

    #[tool(
        description = "Get Fitbit food logs for a date range (inclusive), one page at a time.",
        input_schema = input_schema::<DateRangeArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_food_by_date_range(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date_range(Domain::Food, &ctx, args).await
    }

    #[tool(
        description = "List all Fitbit food records, newest first, one page at a time.",
        input_schema = input_schema::<RecordsArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_food_records(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.records(Domain::Food, &ctx, args).await
    }

    #[tool(
        description = "Get vitals for one day: weight, BMI and body fat, and blood-pressure \
                       readings, with the device provider.",
        input_schema = input_schema::<ByDateArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_vitals_by_date(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date(Domain::Vitals, &ctx, args).await
    }

    #[tool(
        description = "Get vitals (weight, blood pressure) for a date range (inclusive), one page \
                       at a time.",
        input_schema = input_schema::<DateRangeArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_vitals_by_date_range(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.by_date_range(Domain::Vitals, &ctx, args).await
    }

    #[tool(
        description = "List all vitals records (weight, blood pressure), newest first, one page \
                       at a time.",
        input_schema = input_schema::<RecordsArgs>(),
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_vitals_records(
        &self,
        ctx: RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        self.records(Domain::Vitals, &ctx, args).await
    }
}

/// The three tool shapes, each generic over the domain.
impl HealthTools {
    async fn by_date(
        &self,
        domain: Domain,
        ctx: &RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        let call = async {
            let args: ByDateArgs = parse_args(args)?;
            let date = parse_date("date", &args.date)?;
            self.api.by_date(domain, date).await.map_err(|error| match error {
                HealthApiError::Status(http::StatusCode::NOT_FOUND) => {
                    ToolError::NotFound { domain, date }
                }
                other => ToolError::Upstream(other),
            })
        };
        finish(domain, "_by_date", ctx, call).await
    }

    async fn by_date_range(
        &self,
        domain: Domain,
        ctx: &RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        let call = async {
            let args: DateRangeArgs = parse_args(args)?;
            let start = parse_date("startDate", &args.start_date)?;
            let end = parse_date("endDate", &args.end_date)?;
            if start > end {
                return Err(ToolError::Invalid("startDate must not be after endDate".to_owned()));
            }
            let page = page(args.page_number, args.page_size)?;
            Ok(self.api.by_date_range(domain, start, end, page).await?)
        };
        finish(domain, "_by_date_range", ctx, call).await
    }

    async fn records(
        &self,
        domain: Domain,
        ctx: &RequestContext<RoleServer>,
        args: JsonObject,
    ) -> CallToolResult {
        let call = async {
            let args: RecordsArgs = parse_args(args)?;
            let page = page(args.page_number, args.page_size)?;
            Ok(self.api.records(domain, page).await?)
        };
        finish(domain, "_records", ctx, call).await
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "mcp-backend",
    instructions = "Read-only access to one person's Fitbit-style health records (activity, \
                    sleep, food, vitals). Dates are yyyy-MM-dd; paged tools take pageNumber \
                    (from 1) and pageSize (1 to 50)."
)]
impl ServerHandler for HealthTools {}

/// Runs one tool call, logs its outcome with the calling client, and renders the result.
async fn finish(
    domain: Domain,
    shape: &'static str,
    ctx: &RequestContext<RoleServer>,
    call: impl std::future::Future<Output = Result<serde_json::Value, ToolError>>,
) -> CallToolResult {
    let started = Instant::now();
    let outcome = call.await;
    let client = client_id(ctx);
    let client = client.as_deref();
    let tool = format!("get_{domain}{shape}");
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(record) => {
            tracing::info!(%tool, client, elapsed_ms, "tool call succeeded");
            CallToolResult::success(vec![ContentBlock::text(record.to_string())])
        }
        Err(error) => {
            match &error {
                ToolError::Upstream(source) => {
                    // The source chain (connection refused, ...) is for the log only.
                    let mut chain = Vec::new();
                    let mut next = std::error::Error::source(source);
                    while let Some(cause) = next {
                        chain.push(cause.to_string());
                        next = cause.source();
                    }
                    let cause = (!chain.is_empty()).then(|| chain.join(": "));
                    let cause = cause.as_deref();
                    tracing::warn!(
                        %tool, client, elapsed_ms, %error, cause, "tool call failed upstream"
                    );
                }
                ToolError::Invalid(_) | ToolError::NotFound { .. } => {
                    tracing::info!(%tool, client, elapsed_ms, %error, "tool call refused");
                }
            }
            error_result(&error.to_string())
        }
    }
}

/// The error shape Biotrackr's tools return: `{"error": "..."}` as text, `is_error: true`.
fn error_result(message: &str) -> CallToolResult {
    let body = serde_json::json!({ "error": message });
    CallToolResult::error(vec![ContentBlock::text(body.to_string())])
}

/// The client id keyward vouched for, if the request came through keyward; printable ASCII
/// only and bounded, since it lands in the log.
fn client_id(ctx: &RequestContext<RoleServer>) -> Option<String> {
    let parts = ctx.extensions.get::<http::request::Parts>()?;
    let value = parts.headers.get(CLIENT_HEADER)?.to_str().ok()?;
    let printable = value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    printable.then(|| value.to_owned())
}

fn parse_args<T: DeserializeOwned>(args: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(serde_json::Value::Object(args))
        .map_err(|e| ToolError::Invalid(format!("invalid arguments: {e}")))
}

fn parse_date(name: &str, text: &str) -> Result<Date, ToolError> {
    Date::parse(text).ok_or_else(|| {
        ToolError::Invalid(format!("{name} must be a calendar date in yyyy-MM-dd format"))
    })
}

/// Page numbers start at 1; page sizes are clamped to 1..=50, as Biotrackr does.
fn page(number: i64, size: i64) -> Result<Page, ToolError> {
    if !(1..=MAX_PAGE_NUMBER).contains(&number) {
        return Err(ToolError::Invalid(format!(
            "pageNumber must be between 1 and {MAX_PAGE_NUMBER}"
        )));
    }
    let size = size.clamp(1, MAX_PAGE_SIZE);
    // Both are in u32 range after the checks above.
    Ok(Page {
        number: u32::try_from(number).unwrap_or(u32::MAX),
        size: u32::try_from(size).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: serde_json::Value) -> JsonObject {
        match value {
            serde_json::Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn page_numbers_start_at_one_and_sizes_are_clamped() {
        assert_eq!(page(1, 20).unwrap(), Page { number: 1, size: 20 });
        assert_eq!(page(3, 0).unwrap(), Page { number: 3, size: 1 });
        assert_eq!(page(3, -7).unwrap(), Page { number: 3, size: 1 });
        assert_eq!(page(3, 51).unwrap(), Page { number: 3, size: 50 });
        assert_eq!(page(3, i64::MAX).unwrap(), Page { number: 3, size: 50 });
        assert_eq!(
            page(MAX_PAGE_NUMBER, 50).unwrap().number,
            u32::try_from(MAX_PAGE_NUMBER).unwrap()
        );
        for bad in [0, -1, i64::MIN, MAX_PAGE_NUMBER + 1] {
            assert!(matches!(page(bad, 20), Err(ToolError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn paging_arguments_default_to_first_page_of_twenty() {
        let args: RecordsArgs = parse_args(JsonObject::new()).unwrap();
        assert_eq!((args.page_number, args.page_size), (1, 20));
        let args: DateRangeArgs = parse_args(object(serde_json::json!({
            "startDate": "2025-01-01", "endDate": "2025-01-31", "pageSize": 5
        })))
        .unwrap();
        assert_eq!((args.page_number, args.page_size), (1, 5));
    }

    #[test]
    fn malformed_arguments_become_readable_errors() {
        let missing = parse_args::<ByDateArgs>(JsonObject::new()).unwrap_err();
        assert!(missing.to_string().contains("missing field `date`"), "{missing}");
        let wrong_type =
            parse_args::<RecordsArgs>(object(serde_json::json!({"pageNumber": "two"})))
                .unwrap_err();
        assert!(wrong_type.to_string().starts_with("invalid arguments"), "{wrong_type}");
        let bad_date = parse_date("startDate", "2025-02-30").unwrap_err();
        assert_eq!(bad_date.to_string(), "startDate must be a calendar date in yyyy-MM-dd format");
    }

    #[test]
    fn error_results_carry_the_biotrackr_shape() {
        let result = error_result("startDate must not be after endDate");
        assert_eq!(result.is_error, Some(true));
        let text =
            serde_json::to_value(&result.content[0]).unwrap()["text"].as_str().unwrap().to_owned();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body, serde_json::json!({"error": "startDate must not be after endDate"}));
    }

    #[test]
    fn twelve_read_only_tools_with_schemas() {
        let router = HealthTools::tool_router();
        let tools = router.list_all();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        let mut expected = Vec::new();
        for domain in ["activity", "sleep", "food", "vitals"] {
            expected.push(format!("get_{domain}_by_date"));
            expected.push(format!("get_{domain}_by_date_range"));
            expected.push(format!("get_{domain}_records"));
        }
        expected.sort();
        assert_eq!(names, expected);
        for tool in &tools {
            let annotations = tool.annotations.as_ref().expect("annotations");
            assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.destructive_hint, Some(false), "{}", tool.name);
            assert_eq!(annotations.idempotent_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.open_world_hint, Some(false), "{}", tool.name);
            let schema = serde_json::Value::Object((*tool.input_schema).clone());
            let properties = schema["properties"].as_object().expect("properties");
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            if tool.name.ends_with("_by_date") {
                assert!(properties.contains_key("date"), "{}", tool.name);
                assert_eq!(required, vec![serde_json::json!("date")]);
            } else if tool.name.ends_with("_by_date_range") {
                for key in ["startDate", "endDate", "pageNumber", "pageSize"] {
                    assert!(properties.contains_key(key), "{} {key}", tool.name);
                }
                assert_eq!(required.len(), 2, "{}", tool.name);
            } else {
                for key in ["pageNumber", "pageSize"] {
                    assert!(properties.contains_key(key), "{} {key}", tool.name);
                }
                assert!(required.is_empty(), "{}", tool.name);
            }
        }
    }
}
