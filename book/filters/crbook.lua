-- crbook.lua — what the book's three Lua filters share: where files are, reading
-- files, recording them for the build's depfile, CSV parsing with the provenance
-- header, the `where` row filter and the provenance line under tables and plots.
--
-- Configuration comes from environment variables that book/build_book.py sets
-- (a test or a person running pandoc by hand sets them the same way):
--   CRBOOK_ROOT    repository root; `file=`, `script=` and `src=` resolve against it
--                  (a `src=` CSV is also looked up under ROOT/book/). Default ".".
--   CRBOOK_LABDIR  folder holding NAME.csv for every `src="lab:NAME"`.
--   CRBOOK_FIGDIR  folder the plot filter writes its data files and SVGs into.
--   CRBOOK_DEPS    optional file; every file a filter reads is appended to it.
local M = {}

M.root = os.getenv('CRBOOK_ROOT') or '.'
M.labdir = os.getenv('CRBOOK_LABDIR')
M.figdir = os.getenv('CRBOOK_FIGDIR')
M.depsfile = os.getenv('CRBOOK_DEPS')

-- Stops the build: pandoc prints the message and exits non-zero.
function M.fail(what, msg)
  error('\n[book] ' .. what .. ': ' .. msg .. '\n', 0)
end

local function is_abs(p) return p:sub(1, 1) == '/' end

function M.join(a, b)
  if is_abs(b) then return b end
  if a:sub(-1) == '/' then return a .. b end
  return a .. '/' .. b
end

function M.exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() return true end
  return false
end

function M.record_dep(path)
  if not M.depsfile or M.depsfile == '' then return end
  local f = io.open(M.depsfile, 'a')
  if f then
    f:write(path, '\n')
    f:close()
  end
end

-- Reads a whole file (recorded as a dependency); nil, message when it cannot.
function M.read(path)
  local f, err = io.open(path, 'rb')
  if not f then return nil, err end
  local text = f:read('a')
  f:close()
  M.record_dep(path)
  return text
end

-- Writes text to PATH.tmp, then renames it to path: an interrupted build never
-- leaves a truncated file under the real name.
function M.write(path, text)
  local tmp = path .. '.tmp'
  local f, err = io.open(tmp, 'wb')
  if not f then M.fail('write', tmp .. ': ' .. tostring(err)) end
  local ok, werr = f:write(text)
  local closed, cerr = f:close()
  if not ok or not closed then
    os.remove(tmp)
    M.fail('write', tmp .. ': ' .. tostring(werr or cerr))
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    M.fail('write', 'cannot rename ' .. tmp .. ' to ' .. path .. ': ' .. tostring(rerr))
  end
end

-- Splits text into lines (without their newline characters).
function M.lines(text)
  local out = {}
  text = text:gsub('\r\n', '\n')
  for line in (text .. (text:sub(-1) == '\n' and '' or '\n')):gmatch('(.-)\n') do
    out[#out + 1] = line
  end
  return out
end

function M.trim(s) return (s:gsub('^%s+', ''):gsub('%s+$', '')) end

-- Comma-separated list of trimmed, non-empty items.
function M.split_list(s)
  local out = {}
  if not s then return out end
  for item in (s .. ','):gmatch('([^,]*),') do
    item = M.trim(item)
    if item ~= '' then out[#out + 1] = item end
  end
  return out
end

----------------------------------------------------------------------------
-- CSV with a provenance header (lib/csv.h): "# key: value" lines, a header
-- row, data rows. Fields may be double-quoted ("" inside quotes is a quote).

local function parse_csv_line(line, where)
  local fields, i, n = {}, 1, #line
  while true do
    local field
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while true do
        local c = line:sub(j, j)
        if c == '' then M.fail('csv', where .. ': unterminated quoted field') end
        if c == '"' then
          if line:sub(j + 1, j + 1) == '"' then
            buf[#buf + 1] = '"'
            j = j + 2
          else
            j = j + 1
            break
          end
        else
          buf[#buf + 1] = c
          j = j + 1
        end
      end
      field = table.concat(buf)
      i = j
    else
      local j = line:find(',', i, true) or (n + 1)
      field = line:sub(i, j - 1)
      i = j
    end
    fields[#fields + 1] = field
    if i > n then break end
    -- line:sub(i, i) is the comma
    i = i + 1
    if i > n then fields[#fields + 1] = '' break end
  end
  return fields
end

-- Resolves a `src=` attribute to a file path.
function M.csv_path(src, what)
  local lab = src:match('^lab:(.+)$')
  if lab then
    if not M.labdir or M.labdir == '' then
      M.fail(what, 'src="' .. src .. '" needs CRBOOK_LABDIR (the folder of the lab CSVs)')
    end
    local p = M.join(M.labdir, lab .. '.csv')
    if not M.exists(p) then
      M.fail(what, 'src="' .. src .. '": no lab CSV ' .. p ..
             ' (is there a lab named ' .. lab .. ', and did the book build run it?)')
    end
    return p
  end
  for _, base in ipairs({ M.root, M.join(M.root, 'book') }) do
    local p = M.join(base, src)
    if M.exists(p) then return p end
  end
  M.fail(what, 'src="' .. src .. '": file not found (looked under ' .. M.root ..
         ' and ' .. M.join(M.root, 'book') .. ')')
end

-- Loads a CSV: { path, prov = {key = value}, prov_lines = {...}, header = {...},
-- rows = {{...}}, index = {name = column number} }.
function M.load_csv(src, what)
  local path = M.csv_path(src, what)
  local text, err = M.read(path)
  if not text then M.fail(what, path .. ': ' .. tostring(err)) end
  local t = { path = path, prov = {}, prov_lines = {}, rows = {}, index = {} }
  for lineno, line in ipairs(M.lines(text)) do
    if line:match('^#') then
      t.prov_lines[#t.prov_lines + 1] = line
      local k, v = line:match('^#%s*([%w_%-]+)%s*:%s*(.-)%s*$')
      if k then t.prov[k:lower()] = v end
    elseif M.trim(line) ~= '' then
      local fields = parse_csv_line(line, path .. ':' .. lineno)
      if not t.header then
        t.header = {}
        for i, name in ipairs(fields) do
          name = M.trim(name)
          t.header[i] = name
          t.index[name] = i
        end
      else
        t.rows[#t.rows + 1] = fields
      end
    end
  end
  if not t.header then M.fail(what, path .. ': no header row') end
  return t
end

function M.column(t, name, what)
  local i = t.index[name]
  if not i then
    M.fail(what, 'unknown column "' .. name .. '" in ' .. t.path ..
           ' (columns: ' .. table.concat(t.header, ', ') .. ')')
  end
  return i
end

local function same_value(a, b)
  a, b = M.trim(a or ''), M.trim(b or '')
  if a == b then return true end
  local x, y = tonumber(a), tonumber(b)
  return x ~= nil and y ~= nil and x == y
end

-- Keeps the rows for which every condition of `where` holds:
-- "col=value,col!=value" (values compared as text, or as numbers when both are).
function M.filter_rows(t, where, what)
  local conds = {}
  for _, c in ipairs(M.split_list(where)) do
    local col, op, val = c:match('^(.-)%s*(!?=)%s*(.*)$')
    if not col or col == '' then
      M.fail(what, 'bad where condition "' .. c .. '" (expected col=value or col!=value)')
    end
    conds[#conds + 1] = { i = M.column(t, M.trim(col), what), neg = (op == '!='), val = val }
  end
  local out = {}
  for _, row in ipairs(t.rows) do
    local keep = true
    for _, c in ipairs(conds) do
      local eq = same_value(row[c.i], c.val)
      if eq == c.neg then keep = false break end
    end
    if keep then out[#out + 1] = row end
  end
  return out
end

-- "2024-05-01T12:34:56Z" -> "2024-05-01 12:34 UTC"; other forms unchanged.
local function nice_date(d)
  local day, hm = d:match('^(%d%d%d%d%-%d%d%-%d%d)[T ](%d%d:%d%d)')
  if day then
    if d:match('Z$') or d:match('UTC') or d:match('%+00:?00$') then
      return day .. ' ' .. hm .. ' UTC'
    end
    return day .. ' ' .. hm
  end
  return d
end

-- "Measured on MACHINE (CPU), N threads, DATE, git REV." from the provenance.
function M.provenance(t)
  local p = t.prov
  local where = p.machine or 'an unnamed machine'
  local hw = {}
  if p.gpu and p.gpu ~= '' then hw[#hw + 1] = p.gpu end
  if p.cpu and p.cpu ~= '' then hw[#hw + 1] = p.cpu end
  local s = 'Measured on ' .. where
  if #hw > 0 then s = s .. ' (' .. table.concat(hw, '; ') .. ')' end
  if p.threads and p.threads ~= '' then
    s = s .. ', ' .. p.threads .. (p.threads == '1' and ' thread' or ' threads')
  end
  if p.date and p.date ~= '' then s = s .. ', ' .. nice_date(p.date) end
  if p.git and p.git ~= '' then s = s .. ', git ' .. p.git end
  if next(p) == nil then s = 'Provenance unknown: the CSV has no "# key: value" header' end
  return s .. '.'
end

-- Caption inlines: the author's caption (Markdown) then the provenance line.
function M.caption(text, t)
  local inl = pandoc.List()
  if text and text ~= '' then
    local doc = pandoc.read(text, 'markdown')
    if doc.blocks[1] and doc.blocks[1].content then
      inl:extend(doc.blocks[1].content)
      local last = inl[#inl]
      if last and last.t == 'Str' and not last.text:match('[%.!?]$') then
        inl[#inl] = pandoc.Str(last.text .. '.')
      end
      inl:insert(pandoc.Space())
    end
  end
  local words = pandoc.List()
  for w in M.provenance(t):gmatch('%S+') do
    if #words > 0 then words:insert(pandoc.Space()) end
    words:insert(pandoc.Str(w))
  end
  inl:insert(pandoc.Span(words, pandoc.Attr('', { 'provenance' })))
  return inl
end

return M
