resource "google_firestore_database" "status" {
  name        = var.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"
  depends_on  = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "images" {
  repository_id = "dropbatch"
  location      = var.region
  format        = "DOCKER"
  description   = "The dropbatch GPU task image (Dockerfile.gpu)."
  depends_on    = [google_project_service.apis]
}

resource "google_pubsub_topic" "batch_state" {
  name       = "dropbatch-batch-state"
  depends_on = [google_project_service.apis]
}
