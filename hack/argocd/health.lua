-- Argo CD health check for dbmigrate.io/DatabaseMigration.
--
-- Install it as `resource.customizations.health.dbmigrate.io_DatabaseMigration` in argocd-cm
-- (see argocd-cm-patch.yaml next to this file). Argo CD runs it with the live object in `obj`
-- and reads `status` and `message` from the table it returns.
--
--   no status yet, or status older than the spec (observedGeneration < generation) -> Progressing
--   Ready=True (phase Succeeded)                                                    -> Healthy
--   phase Failed or RolledBack, or Stalled=True                                     -> Degraded
--   spec.suspend or phase Suspended                                                 -> Suspended
--   anything else (Pending, Progressing, Waiting, RollingBack)                      -> Progressing
--
-- The message is the Ready condition's message, prefixed with the phase and current step.

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(status, ready, fallback)
  local parts = {}
  if status.phase ~= nil then
    table.insert(parts, status.phase)
  end
  if status.currentStep ~= nil and status.currentStep ~= "" then
    local step = "step " .. status.currentStep
    if status.progress ~= nil and status.progress ~= "" then
      step = step .. " (" .. status.progress .. ")"
    end
    table.insert(parts, step)
  end
  local head = table.concat(parts, ", ")
  local text = fallback
  if ready ~= nil then
    if ready.message ~= nil and ready.message ~= "" then
      text = ready.message
    elseif ready.reason ~= nil and ready.reason ~= "" then
      text = ready.reason
    end
  end
  if head == "" then
    return text
  end
  if text == nil or text == "" then
    return head
  end
  return head .. ": " .. text
end

local hs = {}
local status = obj.status
if status == nil or next(status) == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the dbmigrate operator to pick up the migration"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local ready = condition(status, "Ready")
local observed = status.observedGeneration
if observed == nil and ready ~= nil then
  observed = ready.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the dbmigrate operator to observe generation " .. generation
  if observed ~= nil then
    hs.message = hs.message .. " (last observed " .. observed .. ")"
  end
  return hs
end

local phase = status.phase
local stalled = condition(status, "Stalled")

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(status, ready, "Migration succeeded")
  return hs
end

if phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = describe(status, ready, "Migration " .. phase)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  local text = stalled.message
  if text == nil or text == "" then
    text = stalled.reason
  end
  hs.message = describe(status, {message = text}, "Migration stalled")
  return hs
end

local suspend = obj.spec ~= nil and obj.spec.suspend == true
if suspend or phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(status, ready, "Migration suspended (spec.suspend)")
  return hs
end

hs.status = "Progressing"
hs.message = describe(status, ready, "Migration in progress")
return hs
