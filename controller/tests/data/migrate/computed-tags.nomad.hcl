job "computed" {
  group "g" {
    service {
      name = "computed"
      tags = [for HOST in var.HOSTNAMES : "https://${HOST}"]
    }
  }
}
