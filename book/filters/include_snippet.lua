-- include_snippet.lua — replaces
--
--   ```{.include file="chapters/01-direct/direct.c" snippet="direct_loops"}
--   ```
--
-- by the lines between `// @snippet direct_loops` and `// @end direct_loops` of that
-- file, headed by its path and line range, with the file's real line numbers.
-- Marker lines are never shown; nor are coursework regions' `@solution` line and
-- their stub (from `@stub` through `@end-solution`). Where lines are hidden the
-- excerpt is split into consecutive code blocks, each numbered from its own first
-- line, inside one listing (the CSS joins them and marks the jump).
-- Optional attributes: `lang` (highlighting language, default from the extension),
-- no `snippet` (the whole file, markers still hidden).
-- A missing file or snippet stops the build with a message naming both.
--
-- The student edition (CRBOOK_EDITION=student) shows each coursework region the
-- other way round: the task's statement (the `@solution` line, as a comment
-- "// Task NAME: ...") and its stub lines uncommented, as the kit has them, each
-- at its real line number; the solution's lines are never shown.
local crbook = dofile(pandoc.path.join({ pandoc.path.directory(PANDOC_SCRIPT_FILE), 'crbook.lua' }))

-- 'teacher' (the default: solutions shown, stubs hidden) or 'student'.
local EDITION = os.getenv('CRBOOK_EDITION') or ''
if EDITION == '' then EDITION = 'teacher' end
if EDITION ~= 'teacher' and EDITION ~= 'student' then
  crbook.fail('include', 'CRBOOK_EDITION is "' .. EDITION .. '" (expected teacher or student)')
end

local LANG = {
  c = 'c', h = 'c', cu = 'cpp', cuh = 'cpp', cc = 'cpp', cpp = 'cpp', hpp = 'cpp',
  py = 'python', lua = 'lua', sh = 'bash', gp = 'gnuplot', md = 'markdown',
  build = 'meson', txt = '', csv = '', ini = 'ini',
}

-- A marker line: a comment (//, #, --, or /* */) whose text starts with @word.
-- Returns kind, argument.
local function marker(line)
  local body = line:match('^%s*//+%s*(@.-)%s*$')
    or line:match('^%s*/%*%s*(@.-)%s*%*/%s*$')
    or line:match('^%s*#+%s*(@.-)%s*$')
    or line:match('^%s*%-%-+%s*(@.-)%s*$')
  if not body then return nil end
  local kind, rest = body:match('^@([%w%-_]+)%s*(.*)$')
  if kind == 'snippet' or kind == 'end' or kind == 'solution' or kind == 'stub'
     or kind == 'end-solution' then
    return kind, rest
  end
  return nil
end

local function lang_of(path)
  local base = path:match('([^/]+)$') or path
  if base == 'meson.build' then return 'meson' end
  local ext = base:match('%.([%w]+)$')
  return ext and LANG[ext:lower()] or ''
end

local function excerpt(el)
  local what = 'include'
  local file = el.attributes.file
  local name = el.attributes.snippet
  if not file or file == '' then
    crbook.fail(what, 'a {.include} block needs file="..." (snippet="' .. tostring(name) .. '")')
  end
  local path = crbook.join(crbook.root, file)
  local text, err = crbook.read(path)
  if not text then
    crbook.fail(what, 'file "' .. file .. '" not found (' .. tostring(err) .. ')' ..
                (name and (', wanted snippet "' .. name .. '"') or ''))
  end
  local lines = crbook.lines(text)

  local first, last = 1, #lines
  if name and name ~= '' then
    local starts = {}
    for i, l in ipairs(lines) do
      local k, arg = marker(l)
      if k == 'snippet' and arg == name then starts[#starts + 1] = i end
    end
    if #starts == 0 then
      crbook.fail(what, 'snippet "' .. name .. '" not found in ' .. file ..
                  ' (expected a line "// @snippet ' .. name .. '")')
    elseif #starts > 1 then
      crbook.fail(what, 'snippet "' .. name .. '" begins ' .. #starts .. ' times in ' .. file)
    end
    local stop
    for i = starts[1] + 1, #lines do
      local k, arg = marker(lines[i])
      if k == 'end' and arg == name then stop = i break end
    end
    if not stop then
      crbook.fail(what, 'snippet "' .. name .. '" in ' .. file .. ' has no end line "// @end ' ..
                  name .. '"')
    end
    first, last = starts[1] + 1, stop - 1
  end

  -- Which lines are shown: { n = real line number, text = what is printed }.
  local shown, tasks = {}, {}
  local state = 'code'                          -- code | solution | stub
  for i = first, last do
    local k, arg = marker(lines[i])
    if k == 'solution' then
      state = 'solution'
      local task, desc = (arg or ''):match('^([%w_]+)%s*:%s*(.-)%s*$')
      if not task then
        crbook.fail(what, file .. ':' .. i .. ': expected "// @solution TASK: statement", got "' ..
                    crbook.trim(lines[i]) .. '"')
      end
      tasks[#tasks + 1] = task
      if EDITION == 'student' then
        shown[#shown + 1] = { n = i, text = lines[i]:match('^%s*') .. '// Task ' .. task .. ': ' .. desc }
      end
    elseif k == 'stub' then
      state = 'stub'
    elseif k == 'end-solution' then
      state = 'code'
    elseif k == nil then
      if state == 'code' or (state == 'solution' and EDITION == 'teacher') then
        shown[#shown + 1] = { n = i, text = lines[i] }
      elseif state == 'stub' and EDITION == 'student' then
        -- "    // code" -> "    code" (the kit's rule); "    //" -> ""
        local ind, code = lines[i]:match('^(%s*)// ?(.*)$')
        if not ind then
          crbook.fail(what, file .. ':' .. i .. ': a stub line must be code commented with "// "')
        end
        shown[#shown + 1] = { n = i, text = (ind .. code):gsub('%s+$', '') }
      end
    end
  end
  -- Drop blank lines at both ends.
  while #shown > 0 and crbook.trim(shown[1].text) == '' do table.remove(shown, 1) end
  while #shown > 0 and crbook.trim(shown[#shown].text) == '' do table.remove(shown) end
  if #shown == 0 then
    crbook.fail(what, 'snippet "' .. tostring(name) .. '" in ' .. file .. ' shows no lines')
  end

  -- Common indentation (spaces) of the shown lines goes.
  local indent = math.huge
  for _, l in ipairs(shown) do
    if crbook.trim(l.text) ~= '' then
      indent = math.min(indent, #l.text:match('^ *'))
    end
  end
  if indent == math.huge then indent = 0 end

  -- Runs of consecutive line numbers.
  local runs, cur = {}, nil
  for _, l in ipairs(shown) do
    if cur and l.n == cur.last + 1 then
      cur.last = l.n
      cur.lines[#cur.lines + 1] = l.text:sub(indent + 1)
    else
      cur = { first = l.n, last = l.n, lines = { l.text:sub(indent + 1) } }
      runs[#runs + 1] = cur
    end
  end
  return file, name, runs, tasks
end

function CodeBlock(el)
  if not el.classes:includes('include') then return nil end
  local file, name, runs, tasks = excerpt(el)
  local lang = el.attributes.lang or lang_of(file)

  local ranges = {}
  for _, r in ipairs(runs) do
    ranges[#ranges + 1] = (r.first == r.last) and tostring(r.first)
      or (r.first .. '–' .. r.last)
  end
  local head_inl = { pandoc.Code(file, pandoc.Attr('', { 'listing-file' })), pandoc.Space() }
  if EDITION == 'student' and #tasks > 0 then
    head_inl[#head_inl + 1] = pandoc.Span({ pandoc.Str((#tasks == 1 and 'task ' or 'tasks ') ..
                                            table.concat(tasks, ', ')) },
                                          pandoc.Attr('', { 'listing-task' }))
    head_inl[#head_inl + 1] = pandoc.Space()
  end
  head_inl[#head_inl + 1] =
    pandoc.Span({ pandoc.Str(((#runs == 1 and runs[1].first == runs[1].last) and 'line '
                              or 'lines ') .. table.concat(ranges, ', ')) },
                pandoc.Attr('', { 'listing-lines' }))
  local head = pandoc.Div({ pandoc.Plain(head_inl) }, pandoc.Attr('', { 'listing-head' }))

  local blocks = { head }
  for k, r in ipairs(runs) do
    local classes = { 'numberLines' }
    if lang ~= '' then table.insert(classes, 1, lang) end
    if k > 1 then classes[#classes + 1] = 'listing-cont' end
    blocks[#blocks + 1] = pandoc.CodeBlock(table.concat(r.lines, '\n'),
      pandoc.Attr('', classes, { startFrom = tostring(r.first) }))
  end
  local id = el.identifier ~= '' and el.identifier or ''
  local attrs = { ['data-file'] = file }
  if name then attrs['data-snippet'] = name end
  if #tasks > 0 then attrs['data-tasks'] = table.concat(tasks, ' ') end
  -- A task's statement can be longer than any code line, and a code line longer than
  -- the 100 characters the layout gives a listing would be clipped: such listings wrap.
  local longest = 0
  for _, r in ipairs(runs) do
    for _, line in ipairs(r.lines) do
      longest = math.max(longest, utf8.len(line) or #line)
    end
  end
  local classes = { 'listing' }
  if (EDITION == 'student' and #tasks > 0) or longest > 100 then
    classes[#classes + 1] = 'listing-wrap'
  end
  return pandoc.Div(blocks, pandoc.Attr(id, classes, attrs))
end
