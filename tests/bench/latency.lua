-- wrk summary in a machine-readable form: totals, errors and latency percentiles (µs),
-- p99.9 included (wrk --latency stops at p99).
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("RESULT requests %d\n", summary.requests))
   io.write(string.format("RESULT duration_us %d\n", summary.duration))
   io.write(string.format("RESULT errors %d\n",
      e.connect + e.read + e.write + e.status + e.timeout))
   io.write(string.format("RESULT non2xx %d\n", e.status))
   for _, p in ipairs({ 50, 90, 99, 99.9 }) do
      io.write(string.format("RESULT p%s_us %d\n", tostring(p), latency:percentile(p)))
   end
   io.write(string.format("RESULT mean_us %.1f\n", latency.mean))
   io.write(string.format("RESULT max_us %d\n", latency.max))
end
