-- wrk script: POST /api/v1/rides by one existing user, between random distinct areas.
-- Arguments (after `--`): the creator, a future timestamp (DD-MM-YYYY:SS-MM-HH).
local creator, timestamp
function init(args)
    creator = args[1]
    timestamp = args[2]
end

function request()
    local source = math.random(1, 198)
    local destination = source % 198 + 1
    local body = string.format('{"created_by":"%s","timestamp":"%s","source":%d,"destination":%d}',
        creator, timestamp, source, destination)
    return wrk.format("POST", "/api/v1/rides", nil, body)
end
