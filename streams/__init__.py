"""kaltim-jamsostek-stream: live BPJS Ketenagakerjaan coverage for East Kalimantan, on Kafka + Faust."""
