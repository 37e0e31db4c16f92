//! What the demo shop is made of: its services, endpoints, regions,
//! methods and status codes, with how often each occurs.

/// One service of the shop and how it behaves on a normal day.
pub(super) struct Service {
    pub(super) name: &'static str,
    pub(super) weight: u32,
    /// Median latency in ms.
    pub(super) median_ms: f64,
    /// Share of 5xx responses on a normal day.
    pub(super) error_rate: f64,
    /// What the service's resources are called in messages.
    pub(super) noun: &'static str,
    /// Its two endpoint templates; `{id}` becomes a number.
    pub(super) endpoints: [&'static str; 2],
}

pub(super) const SERVICES: [Service; 12] = [
    Service {
        name: "checkout",
        weight: 8,
        median_ms: 180.0,
        error_rate: 0.012,
        noun: "order",
        endpoints: ["/api/v1/orders", "/api/v2/orders/{id}"],
    },
    Service {
        name: "payments",
        weight: 7,
        median_ms: 240.0,
        error_rate: 0.035,
        noun: "payment",
        endpoints: ["/api/v1/payments", "/api/v1/payments/{id}/capture"],
    },
    Service {
        name: "search",
        weight: 14,
        median_ms: 45.0,
        error_rate: 0.008,
        noun: "query",
        endpoints: ["/api/v1/search", "/api/v2/search/suggest"],
    },
    Service {
        name: "auth",
        weight: 12,
        median_ms: 25.0,
        error_rate: 0.005,
        noun: "session",
        endpoints: ["/api/v1/login", "/api/v1/sessions/{id}"],
    },
    Service {
        name: "inventory",
        weight: 6,
        median_ms: 60.0,
        error_rate: 0.010,
        noun: "item",
        endpoints: ["/api/v1/inventory/{id}", "/api/v1/inventory/reserve"],
    },
    Service {
        name: "shipping",
        weight: 5,
        median_ms: 120.0,
        error_rate: 0.015,
        noun: "shipment",
        endpoints: ["/api/v1/shipments", "/api/v1/shipments/{id}/track"],
    },
    Service {
        name: "catalog",
        weight: 10,
        median_ms: 35.0,
        error_rate: 0.004,
        noun: "product",
        endpoints: ["/api/v1/products/{id}", "/api/v2/products"],
    },
    Service {
        name: "cart",
        weight: 9,
        median_ms: 30.0,
        error_rate: 0.006,
        noun: "cart",
        endpoints: ["/api/v1/cart/{id}", "/api/v1/cart/{id}/items"],
    },
    Service {
        name: "notifications",
        weight: 5,
        median_ms: 90.0,
        error_rate: 0.020,
        noun: "notification",
        endpoints: ["/api/v1/notifications", "/api/v1/notifications/{id}/read"],
    },
    Service {
        name: "recommendations",
        weight: 8,
        median_ms: 110.0,
        error_rate: 0.025,
        noun: "recommendation",
        endpoints: ["/api/v1/recommendations/{id}", "/api/v2/recommendations"],
    },
    Service {
        name: "pricing",
        weight: 6,
        median_ms: 40.0,
        error_rate: 0.007,
        noun: "price",
        endpoints: ["/api/v1/prices/{id}", "/api/v1/prices/quote"],
    },
    Service {
        name: "gateway",
        weight: 10,
        median_ms: 8.0,
        error_rate: 0.030,
        noun: "route",
        endpoints: ["/api/v1/status", "/api/v1/routes/{id}"],
    },
];

/// Endpoints every service has, picked now and then.
pub(super) const COMMON_ENDPOINTS: [&str; 6] = [
    "/health",
    "/metrics",
    "/ready",
    "/api/v1/config",
    "/api/v1/version",
    "/api/v1/feature-flags/{id}",
];

pub(super) const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];
pub(super) const REGION_WEIGHTS: [u32; 8] = [30, 15, 20, 12, 8, 7, 4, 4];

pub(super) const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
pub(super) const METHOD_WEIGHTS: [u32; 4] = [62, 24, 9, 5];

pub(super) const SERVER_ERRORS: [i64; 4] = [500, 502, 503, 504];
pub(super) const SERVER_ERROR_WEIGHTS: [u32; 4] = [30, 15, 30, 25];
pub(super) const CLIENT_ERRORS: [i64; 5] = [400, 401, 403, 404, 429];
pub(super) const CLIENT_ERROR_WEIGHTS: [u32; 5] = [30, 20, 10, 30, 10];
pub(super) const CLIENT_ERROR_RATE: f64 = 0.05;

pub(super) const CUSTOMERS: f64 = 5000.0;
