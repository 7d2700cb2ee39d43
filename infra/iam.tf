# Two identities, each with only what its code does (README, deploy).

resource "google_service_account" "function" {
  account_id   = "dropbatch-function"
  display_name = "dropbatch trigger and reconcile functions"
}

resource "google_service_account" "job" {
  account_id   = "dropbatch-job"
  display_name = "dropbatch Batch task VMs"
}

locals {
  function_member = "serviceAccount:${google_service_account.function.email}"
  job_member      = "serviceAccount:${google_service_account.job.email}"
}

# --- function: read the inbox, write status files, create Batch jobs as the job account ---

resource "google_storage_bucket_iam_member" "function_reads_inbox" {
  bucket = google_storage_bucket.inbox.name
  role   = "roles/storage.objectViewer"
  member = local.function_member
}

# Writing (and replacing) objects, but only `*.status.json` ones.
resource "google_storage_bucket_iam_member" "function_writes_status_files" {
  bucket = google_storage_bucket.inbox.name
  role   = "roles/storage.objectUser"
  member = local.function_member
  condition {
    title      = "status-files-only"
    expression = "resource.name.endsWith(\".status.json\")"
  }
}

# The model store is checked at trigger time: a missing model is a validation error.
resource "google_storage_bucket_iam_member" "function_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = local.function_member
}

resource "google_project_iam_member" "function_creates_batch_jobs" {
  project = var.project_id
  role    = "roles/batch.jobsEditor"
  member  = local.function_member
}

resource "google_service_account_iam_member" "function_acts_as_job_account" {
  service_account_id = google_service_account.job.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.function_member
}

resource "google_project_iam_member" "function_firestore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.function_member
}

resource "google_project_iam_member" "function_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.function_member
}

# Eventarc delivers events with the trigger's identity: it must receive and invoke.
resource "google_project_iam_member" "function_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = local.function_member
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_inbox_function" {
  name     = google_cloudfunctions2_function.on_inbox_object.service_config[0].service
  location = var.region
  role     = "roles/run.invoker"
  member   = local.function_member
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_state_function" {
  name     = google_cloudfunctions2_function.on_batch_state.service_config[0].service
  location = var.region
  role     = "roles/run.invoker"
  member   = local.function_member
}

# --- job: read/write the inbox, read models, Firestore, logs, report to Batch, pull the image ---

resource "google_storage_bucket_iam_member" "job_reads_writes_inbox" {
  bucket = google_storage_bucket.inbox.name
  role   = "roles/storage.objectUser"
  member = local.job_member
}

resource "google_storage_bucket_iam_member" "job_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = local.job_member
}

resource "google_project_iam_member" "job_firestore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.job_member
}

resource "google_project_iam_member" "job_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.job_member
}

resource "google_project_iam_member" "job_batch_agent_reporter" {
  project = var.project_id
  role    = "roles/batch.agentReporter"
  member  = local.job_member
}

resource "google_artifact_registry_repository_iam_member" "job_reads_images" {
  repository = google_artifact_registry_repository.images.name
  location   = var.region
  role       = "roles/artifactregistry.reader"
  member     = local.job_member
}

# Batch publishes the job's state notifications with the job's service account.
resource "google_pubsub_topic_iam_member" "job_publishes_batch_state" {
  topic  = google_pubsub_topic.batch_state.id
  role   = "roles/pubsub.publisher"
  member = local.job_member
}

# --- Google's agents ---

# Cloud Storage publishes object events to Pub/Sub for Eventarc.
data "google_storage_project_service_account" "gcs_agent" {}

resource "google_project_iam_member" "storage_agent_publishes" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs_agent.email_address}"
}
