-- Argo CD health check for Cluster, Server and Image
-- (servermanager.contrail.io), from their kstatus-style status:
-- observedGeneration behind metadata.generation or Reconciling=True -> Progressing,
-- Stalled=True -> Degraded, Ready=True -> Healthy, otherwise Progressing.
-- Install: see README.md, "GitOps".
local hs = {}
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local function message(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end
if conditions.Stalled ~= nil and conditions.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(conditions.Stalled)
  return hs
end
if conditions.Reconciling ~= nil and conditions.Reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(conditions.Reconciling)
  return hs
end
if conditions.Ready ~= nil and conditions.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(conditions.Ready)
  return hs
end
hs.status = "Progressing"
if conditions.Ready ~= nil then
  hs.message = message(conditions.Ready)
else
  hs.message = "waiting for Ready"
end
return hs
