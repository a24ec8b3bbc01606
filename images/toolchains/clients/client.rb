# GET a URL with Ruby's net/http; print `status=N` and the body, or `error=...`.
#     ruby client.rb URL
# As an application uses it: Net::HTTP.start's default proxy (:ENV), no CA options.
require "net/http"
require "uri"

uri = URI(ARGV[0])
begin
  res = Net::HTTP.start(uri.host, uri.port, use_ssl: uri.scheme == "https",
                        open_timeout: 20, read_timeout: 20) { |http| http.get(uri.request_uri) }
  puts "status=#{res.code}"
  puts res.body
rescue StandardError => e
  puts "error=#{e.class}: #{e.message}".tr("\n", " ")
end
