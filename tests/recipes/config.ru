# A Rack app for the Puma recipe (tests/recipes.rs): GET / answers
# "generation=G pid=P" (BATON_GENERATION and the worker's pid).
generation = ENV.fetch("BATON_GENERATION", "0")

run(lambda do |_env|
  body = "generation=#{generation} pid=#{Process.pid}\n"
  [200, { "Content-Type" => "text/plain", "Content-Length" => body.bytesize.to_s }, [body]]
end)
