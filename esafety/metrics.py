"""Every Prometheus metric esafety exports, defined once.

Conventions: `esafety_` prefix, base units (seconds, bytes), `_total` counters, and no label that
identifies a pupil, device, IP address or URL.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from esafety.loopmetrics import LoopCounter, LoopHistogram

# -- proxy --------------------------------------------------------------------------------------------
# Updated on every request from the event loop: lock-free (esafety/loopmetrics.py).
REQUESTS = LoopCounter("esafety_proxy_requests_total", "Requests seen by the filtering proxy", ["scheme"])
DECISIONS = LoopCounter("esafety_proxy_decisions_total", "Policy decisions", ["action", "category"])
DECISION_SECONDS = LoopHistogram(
    "esafety_proxy_decision_seconds", "Time to decide one request (policy engine only)",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025),
)
REQUEST_SECONDS = LoopHistogram(
    "esafety_proxy_request_seconds", "Time from request headers to response end, through the proxy",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ADDON_SECONDS = LoopHistogram(
    "esafety_proxy_addon_seconds", "Time spent in esafety add-on hooks per request",
    buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.05),
)
CONTENT_SCANNED_BYTES = LoopCounter("esafety_content_scanned_bytes_total", "Bytes of page text scanned for phrases")
POLICY_ENTRIES = Gauge("esafety_policy_entries", "Entries loaded per category", ["category"])
POLICY_RELOADS = Counter("esafety_policy_reloads_total", "Policy reloads", ["result"])
POLICY_LOADED_TIMESTAMP = Gauge("esafety_policy_loaded_timestamp_seconds", "When the running policy was loaded")
FAIL_CLOSED = Counter("esafety_proxy_errors_total", "Errors while deciding or acting, by outcome", ["outcome"])
DOWNLOADS_BLOCKED = Counter("esafety_downloads_blocked_total", "Downloads blocked", ["reason"])
BAD_REQUESTS = Counter("esafety_proxy_bad_requests_total", "Requests refused as malformed or hostile", ["reason"])
SPOOL_DEPTH = Gauge("esafety_spool_rows", "Incidents waiting in the on-disk spool for the store to return")
ACCESS_LOG_BACKLOG = Gauge("esafety_access_log_backlog_bytes",
                           "Bytes of the access log not yet in the store (the shipper is behind, or the store is down)")
INCIDENTS_RAISED = Counter("esafety_incidents_raised_total", "Incidents created", ["source", "queue", "level"])

# -- incidents -----------------------------------------------------------------------------------------
INCIDENTS_OPEN = Gauge("esafety_incidents_open", "Open incidents, by level and queue (periodic collector)",
                       ["level", "queue"])
INCIDENTS_OLDEST_UNACK_SECONDS = Gauge("esafety_incidents_oldest_unacknowledged_age_seconds",
                                       "Age of the oldest unacknowledged open incident, by level", ["level"])
INCIDENT_ACK_SECONDS = Histogram(
    "esafety_incident_acknowledge_seconds", "Time from an incident being raised to its acknowledgement",
    ["level"], buckets=(60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400, 7 * 86400),
)
NOTIFICATIONS_SENT = Counter("esafety_notifications_sent_total", "Notification emails sent", ["kind"])
NOTIFICATION_FAILURES = Counter("esafety_notification_failures_total", "Failed notification send attempts", ["kind"])
INCIDENT_ESCALATIONS = Counter("esafety_incident_escalations_total", "Unacknowledged incidents escalated on call",
                               ["level"])

# -- identity (esafety/identity/) ---------------------------------------------------------------------
PROXY_AUTH = Counter("esafety_proxy_auth_total", "Proxy sign-in attempts verified, by method and result "
                     "(method: basic_local | basic_directory | negotiate; result: ok | rejected | error | cached)",
                     ["method", "result"])
PROXY_AUTH_SECONDS = Histogram("esafety_proxy_auth_seconds", "Time to verify one proxy credential (cache misses)",
                               ["method"],  # Kerberos: ~50 us (a local decrypt); an LDAP bind: milliseconds
                               buckets=(2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
PROXY_AUTH_CHALLENGES = Counter("esafety_proxy_auth_challenges_total",
                                "Unidentified clients asked to sign in, by how (challenge: 407, portal: redirect)",
                                ["how"])
IDENTITY_BINDINGS = Gauge("esafety_identity_bindings", "Client IPs bound to a person, by source "
                          "(agent, wifi, radius, portal, static)", ["source"])
IDENTITY_PEOPLE = Gauge("esafety_identity_people",
                        "Active people the proxy knows, by source (roster, directory, local)", ["source"])
IDENTITY_REFRESH_FAILURES = Counter("esafety_identity_refresh_failures_total",
                                    "Failed reloads of the identity tables (the last good tables stay in use)")
IDENTITY_SYNC_LAST_OK = Gauge("esafety_identity_sync_last_ok",
                              "Whether the newest roster import / directory sync was applied (1) or refused (0)",
                              ["source"])
IDENTITY_SYNC_LAST_SUCCESS = Gauge("esafety_identity_sync_last_success_timestamp_seconds",
                                   "When a roster import / directory sync last succeeded", ["source"])
RADIUS_PACKETS = Counter("esafety_radius_packets_total", "RADIUS accounting packets, by status type (start | "
                         "interim_update | stop | accounting_on | accounting_off | other; unknown when unreadable) and "
                         "result (answered: ok | duplicate | unknown_user | machine | kept | incomplete | ignored; "
                         "not answered: bad_authenticator | unknown_client | malformed | store_error | overloaded)",
                         ["status", "result"])
PORTAL_SIGNINS = Counter("esafety_portal_signins_total", "Captive-portal sign-ins, by result (ok | rejected | "
                         "rate_limited | bad_token | csrf | managed)", ["result"])

# -- sensor -------------------------------------------------------------------------------------------
SENSOR_PACKETS = Counter("esafety_sensor_packets_total", "Frames the network sensor read")
SENSOR_FLOWS = Counter("esafety_sensor_flows_total", "Flows the network sensor tracked")
SENSOR_DETECTIONS = Counter("esafety_sensor_detections_total", "Flow detections by protocol", ["protocol"])
SENSOR_DROPPED = Counter("esafety_sensor_dropped_packets_total", "Frames skipped, by reason", ["reason"])
SENSOR_EVICTIONS = Counter("esafety_sensor_flow_table_evictions_total",
                           "Flows evicted because the flow table was full")
SENSOR_ACTIVE_FLOWS = Gauge("esafety_sensor_active_flows", "Flows in the sensor's flow table")

# -- registrations -------------------------------------------------------------------------------------
REGISTRATIONS = Gauge("esafety_registrations", "WiFi registrations by state (periodic collector)", ["state"])
REGISTRATIONS_OVERDUE = Gauge("esafety_registrations_overdue",
                              "Registrations still waiting for IT past their due time (1 working day)")
REGISTRATIONS_OLDEST_PENDING = Gauge("esafety_registrations_oldest_pending_working_seconds",
                                     "Working time (school calendar) the oldest waiting registration has waited")
REGISTRATION_SLA_BREACHES = Counter("esafety_registrations_sla_breaches_total",
                                    "Registrations that passed their due time before IT decided")
REGISTRATION_DECISIONS = Counter("esafety_registrations_decisions_total", "IT decisions on registrations",
                                 ["decision"])
REGISTRATION_REVOCATIONS = Counter("esafety_registrations_revocations_total", "Registrations revoked, by reason code",
                                   ["reason"])
REGISTRATION_QUARANTINES = Counter("esafety_registrations_quarantines_total",
                                   "Devices quarantined, by who (system: failed checks past the grace period)", ["by"])
REGISTRATION_SHARING_DETECTIONS = Counter("esafety_registrations_credential_sharing_detections_total",
                                          "Accounts raised as possibly shared, by signal (devices, ips)", ["signal"])

# -- devices (endpoint agents) -------------------------------------------------------------------------
DEVICES = Gauge("esafety_devices", "Enrolled devices by compliance state (periodic collector)", ["state"])
DEVICES_FAILING = Gauge("esafety_devices_failing", "Devices whose latest result of a check is fail, not excused",
                        ["check"])
DEVICES_BY_REPORT_AGE = Gauge("esafety_devices_by_report_age",
                              "Enrolled devices by the age of their last report (5m, 1h, 1d, older)", ["age"])
DEVICE_STALE = Gauge("esafety_device_stale", "Devices silent for longer than heartbeat + stale buffer")
AGENT_REPORTS = Counter("esafety_agent_reports_total", "Agent reports accepted, by kind", ["kind"])
AGENT_REPORTS_REFUSED = Counter("esafety_agent_reports_refused_total",
                                "Agent API requests refused, by reason (enrolment and reports)", ["reason"])
DEVICE_TAMPER = Counter("esafety_device_tamper_total",
                        "Tamper incidents raised: agent silenced on the network, monitor stopped or modified")
